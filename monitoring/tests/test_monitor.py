"""The monitor loop's own duties, driven directly: pruning, claiming, and two monitors side by side."""

import asyncio
import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from machines import services
from machines.models import Machine
from machines.validation import Registration
from monitoring import checks, history
from monitoring.models import HourlyBucket, PingResult
from monitoring.monitor import Monitor
from tests.support.net import wait_for
from tests.support.processes import running_monitor


@pytest.mark.django_db
def test_a_claim_hides_machines_from_a_second_monitor(make_machine):
    machines = [make_machine() for _ in range(5)]
    first = checks.claim_due("first", 3, timedelta(seconds=30))
    second = checks.claim_due("second", 10, timedelta(seconds=30))
    assert len(first) == 3 and len(second) == 2
    assert {m.pk for m in first}.isdisjoint({m.pk for m in second})
    assert checks.claim_due("third", 10, timedelta(seconds=30)) == []
    # A lapsed claim (its monitor died) is free again.
    later = timezone.now() + timedelta(seconds=31)
    assert len(checks.claim_due("third", 10, timedelta(seconds=30), now=later)) == len(machines)


@pytest.mark.django_db(transaction=True)
def test_two_monitors_never_check_one_machine_twice_at_once(require_icmp):
    machines = [
        services.register_machine(
            Registration(ip_address=f"127.0.81.{n}", hostname=f"loop-{n}", mac_address="02:00:00:00:cc:01")
        ).machine
        for n in range(1, 21)
    ]
    with running_monitor() as one, running_monitor() as two:
        wait_for(lambda: PingResult.objects.count() >= 20 * 5, 30, message=f"checks\n{one.output()}{two.output()}")
    for machine in machines:
        results = PingResult.objects.filter(machine=machine).order_by("checked_at")
        times = list(results.values_list("checked_at", flat=True))
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # The interval is 1 s: two checks of one machine closer than that mean both monitors had it.
        assert all(gap >= 0.9 for gap in gaps), (machine.ip_address, gaps)
    assert Machine.objects.filter(status="active").count() == 20


@pytest.mark.django_db(transaction=True)
def test_an_address_the_policy_refuses_is_never_pinged(make_machine, settings, require_icmp, operator_client):
    import ipaddress

    # Registered before the policy changed: 127.0.94.1 is now refused, 127.0.94.2 is still listed.
    settings.ALLOWED_PREFIXES = [ipaddress.ip_network("127.0.94.2/32")]
    refused = make_machine(ip_address="127.0.94.1")
    allowed = make_machine(ip_address="127.0.94.2")
    monitor = Monitor()

    async def one_step():
        monitor.start_pinger()
        assert await monitor.step()
        if monitor.batches:
            await asyncio.wait(monitor.batches)
        monitor.pinger.close()

    started = timezone.now()
    asyncio.run(one_step())
    monitor.db_executor.shutdown()
    assert PingResult.objects.filter(machine=allowed).exists() and Machine.objects.get(pk=allowed.pk).status == "active"
    refused.refresh_from_db()
    assert not PingResult.objects.filter(machine=refused).exists()
    assert refused.status == "pending" and not refused.claim_token
    assert refused.next_check_at >= started + timedelta(seconds=settings.CHECK_INTERVAL - 1)
    page = operator_client.get(f"/machines/{refused.pk}").content.decode()
    assert "Not checked" in page and "VXLANMGR_ALLOWED_PREFIXES" in page


@pytest.mark.django_db(transaction=True)
def test_the_monitor_folds_settled_hours_prunes_behind_them_and_refreshes_uptime(make_machine, settings):
    settings.RAW_RETENTION_HOURS = 48
    machine = make_machine()
    now = timezone.now()
    old = history.floor(now, timedelta(hours=1)) - timedelta(hours=50)
    PingResult.objects.bulk_create(
        PingResult(machine=machine, checked_at=old + timedelta(minutes=n), ok=n % 4 != 0, rtt_ms=1.0) for n in range(60)
    )
    PingResult.objects.create(machine=machine, ok=True, rtt_ms=1.0)  # this hour's: stays raw

    async def run_history():
        monitor = Monitor(pinger_factory=lambda: None)
        task = asyncio.create_task(monitor._history())
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: not PingResult.objects.filter(checked_at__lt=now - timedelta(hours=48))
                                   .exists() and Machine.objects.get(pk=machine.pk).uptime_30d is not None, 30,
                                   message="history not folded")
        )
        monitor.stop()
        await task
        monitor.db_executor.shutdown()

    asyncio.run(run_history())
    bucket = HourlyBucket.objects.get(machine=machine, start=old)
    assert (bucket.checks, bucket.answered) == (60, 45)
    assert PingResult.objects.count() == 1
    assert Machine.objects.get(pk=machine.pk).uptime_30d == pytest.approx(46 / 61)
