from datetime import timedelta

from django.utils import timezone

from machines.models import Machine


def build_machine(n: int, **fields) -> Machine:
    """Machine number `n` (unsaved), as the monitor would have left it: its status decides the timestamps."""
    now = timezone.now()
    status = fields.pop("status", Machine.Status.ACTIVE)
    values = {
        "hostname": f"node-{n:03d}.lab.example",
        "ip_address": f"10.20.{n // 200}.{n % 200 + 10}",
        "mac_address": f"02:42:0a:14:{n // 256:02x}:{n % 256:02x}",
        "vni": 4100 + n % 4,
        "status": status,
        "registered_at": now - timedelta(days=3, minutes=n),
        "last_registered_at": now - timedelta(hours=2, minutes=n),
        # Far in the future: a running monitor leaves these alone unless a test says otherwise.
        "next_check_at": now + timedelta(hours=1),
    }
    if status == Machine.Status.ACTIVE:
        values |= {"last_seen_at": now - timedelta(seconds=20 + n), "last_rtt_ms": 0.4 + n / 100}
    elif status == Machine.Status.UNREACHABLE:
        values |= {
            "last_seen_at": now - timedelta(minutes=40 + n),
            "unreachable_since": now - timedelta(minutes=38 + n),
            "consecutive_failures": 5,
            "check_interval": 160,
        }
    return Machine(**(values | fields))
