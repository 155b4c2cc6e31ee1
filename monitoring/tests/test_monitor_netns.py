"""The real monitor process pinging a real host in network namespaces: the whole liveness story."""

import re
import signal
import time
from datetime import timedelta

import pytest

from conftest import require
from lab import netns
from machines import services
from machines.models import Machine, MachineEvent
from machines.validation import Registration
from monitoring.models import PingResult
from tests.support.namespaces import HOST_IP
from tests.support.net import wait_for
from tests.support.processes import running_monitor

pytestmark = [pytest.mark.netns, pytest.mark.django_db(transaction=True)]


def register(ip: str = HOST_IP) -> Machine:
    data = Registration(ip_address=ip, hostname="host-a", mac_address="02:00:00:00:aa:01", vni=100)
    return services.register_machine(data).machine


def status(machine: Machine) -> str:
    machine.refresh_from_db()
    return machine.status


def log_kinds(machine: Machine) -> list[str]:
    entries = MachineEvent.objects.filter(ip_address=machine.ip_address).order_by("created_at")
    return list(entries.values_list("kind", flat=True))


def test_pending_active_unreachable_backoff_and_recovery(lab):
    manager, host = lab
    machine = register()
    with running_monitor(manager.command()) as monitor:
        wait_for(lambda: status(machine) == "active", 10, message=f"active\n{monitor.output()}")
        machine.refresh_from_db()
        assert machine.last_seen_at and machine.last_rtt_ms is not None

        host.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        # The first failed check alone changes nothing.
        wait_for(lambda: Machine.objects.get(pk=machine.pk).consecutive_failures >= 1, 10, message="a failure")
        assert status(machine) in {"active", "unreachable"}
        first = Machine.objects.get(pk=machine.pk)
        if first.consecutive_failures < 3:
            assert first.status == "active"
        wait_for(lambda: status(machine) == "unreachable", 15, message=f"unreachable\n{monitor.output()}")
        entry = MachineEvent.objects.get(machine=machine, kind="unreachable")
        assert "3 consecutive failed checks" in entry.detail and "timeout" in entry.detail
        assert Machine.objects.get(pk=machine.pk).consecutive_failures == 3

        # While unreachable the interval doubles (the rules' property tests cover the whole sequence); one real
        # step shows the monitor keeps to it: the fourth check comes 1 s after the third and schedules 2 s.
        wait_for(lambda: Machine.objects.get(pk=machine.pk).check_interval == 2, 10, message="backoff to 2 s")
        failed = PingResult.objects.filter(machine=machine, ok=False).order_by("checked_at")
        third, fourth = list(failed.values_list("checked_at", flat=True))[2:4]
        # The interval plus the 0.5 s timeout and at most one tick.
        assert 1 <= (fourth - third).total_seconds() <= 2.6

        host.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
        wait_for(lambda: status(machine) == "active", 12, message=f"recovery\n{monitor.output()}")
        recovered = MachineEvent.objects.get(machine=machine, kind="recovered")
        assert "outage of" in recovered.detail
        assert log_kinds(machine) == ["unreachable", "recovered"]
        assert f"{machine.hostname} {HOST_IP} (recovered): unreachable -> active" in monitor.output()

        code, seconds = monitor.terminate()
        assert code == 0 and seconds < 5


def test_reregistration_of_an_unreachable_host_is_checked_at_once(lab):
    manager, host = lab
    machine = register()
    host.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
    with running_monitor(manager.command(), VXLANMGR_BACKOFF_MAX="3600", VXLANMGR_CHECK_INTERVAL="60") as monitor:
        wait_for(lambda: status(machine) == "unreachable", 15, message=f"unreachable\n{monitor.output()}")
        machine.refresh_from_db()
        assert machine.next_check_at - machine.last_checked_at >= timedelta(seconds=59)
        host.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
        started = time.monotonic()
        register()  # the host rebooted and registered again
        wait_for(lambda: status(machine) == "active", 5, message=f"active after re-registration\n{monitor.output()}")
        assert time.monotonic() - started < 3


def test_a_killed_monitor_continues_where_it_stopped(lab):
    manager, host = lab
    machine = register()
    host.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
    with running_monitor(manager.command()) as monitor:
        wait_for(lambda: status(machine) == "unreachable", 15, message=f"unreachable\n{monitor.output()}")
        wait_for(lambda: Machine.objects.get(pk=machine.pk).consecutive_failures >= 4, 10, message="4 failures")
        monitor.process.send_signal(signal.SIGKILL)
        monitor.process.wait(5)
    failures_before = Machine.objects.get(pk=machine.pk).consecutive_failures
    with running_monitor(manager.command()) as monitor:
        # Counting goes on from the stored state: no reset, no second "unreachable" entry.
        wait_for(
            lambda: Machine.objects.get(pk=machine.pk).consecutive_failures > failures_before,
            45, message=f"checks to continue\n{monitor.output()}",
        )
        assert status(machine) == "unreachable"
        assert log_kinds(machine) == ["unreachable"]
        host.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
        register()
        wait_for(lambda: status(machine) == "active", 10, message="recovery")
        assert log_kinds(machine) == ["unreachable", "recovered"]


def _echo_requests_seen(host) -> int:
    listing = host.run("nft", "list", "chain", "inet", "vxmcount", "input").stdout
    return int(re.search(r"counter packets (\d+)", listing).group(1))


def test_a_deleted_machine_is_never_pinged_again(lab):
    manager, host = lab
    require(netns.nft_available(), "needs nft (nftables) to count echo requests")
    host.nft(
        "table inet vxmcount {\n chain input {\n  type filter hook input priority 0;\n"
        "  icmp type echo-request counter\n }\n}\n"
    )
    machine = register()
    with running_monitor(manager.command()) as monitor:
        wait_for(lambda: status(machine) == "active", 10, message=f"active\n{monitor.output()}")
        wait_for(lambda: _echo_requests_seen(host) >= 2, 10, message="a second check")
        services.delete_machine(machine.pk, actor="test", force=True)
        time.sleep(1.5)  # a check already in flight may still land
        seen = _echo_requests_seen(host)
        time.sleep(3)  # three check intervals
        assert _echo_requests_seen(host) == seen
        assert not PingResult.objects.filter(machine_id=machine.pk).exists()


def test_without_icmp_the_monitor_exits_at_once_with_one_clear_line(lab):
    manager, _host = lab
    # Inside the namespace no group may open ping sockets, and the process runs without CAP_NET_RAW.
    manager.sysctl("net.ipv4.ping_group_range", "1 0")
    without_raw = manager.command("setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--")
    with running_monitor(without_raw) as monitor:
        code = monitor.process.wait(30)
        lines = [line for line in monitor.output().splitlines() if line.strip()]
        assert code != 0
        assert len(lines) == 1, lines
        assert "ping_group_range" in lines[0] or "CAP_NET_RAW" in lines[0]
