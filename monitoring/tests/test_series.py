"""One machine's history as points: raw results and buckets by time, outages from the failure log."""

from datetime import UTC, datetime, timedelta

import pytest

from machines.models import MachineEvent
from monitoring import series
from monitoring.models import DailyBucket, HourlyBucket, PingResult

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.fixture
def machine(make_machine):
    return make_machine()


def _log(machine, kind, at):
    return MachineEvent.objects.create(machine=machine, hostname=machine.hostname, ip_address=machine.ip_address,
                                       mac_address=machine.mac_address, kind=kind, created_at=at)


def test_raw_points_are_the_machines_results_in_the_range_in_time_order(machine, make_machine):
    other = make_machine()
    PingResult.objects.create(machine=machine, checked_at=T0 + 2 * MINUTE, ok=False, loss=1.0, failure="timeout")
    PingResult.objects.create(machine=machine, checked_at=T0, ok=True, rtt_ms=0.5, loss=0.0)
    PingResult.objects.create(machine=machine, checked_at=T0 - MINUTE, ok=True, rtt_ms=9.0)  # before
    PingResult.objects.create(machine=machine, checked_at=T0 + 10 * MINUTE, ok=True, rtt_ms=9.0)  # at until
    PingResult.objects.create(machine=other, checked_at=T0, ok=True, rtt_ms=9.0)

    points = series.points(machine.pk, "raw", T0, T0 + 10 * MINUTE)

    assert points == [
        {"at": T0, "ok": True, "rtt_ms": 0.5, "loss": 0.0, "failure": ""},
        {"at": T0 + 2 * MINUTE, "ok": False, "rtt_ms": None, "loss": 1.0, "failure": "timeout"},
    ]
    assert points[0]["at"].tzinfo is not None


@pytest.mark.parametrize(
    ("resolution", "model", "period"), [("hour", HourlyBucket, HOUR), ("day", DailyBucket, 24 * HOUR)]
)
def test_bucket_points_say_loss_as_a_share_and_the_mean_round_trip(machine, resolution, model, period):
    model.objects.create(machine=machine, start=T0 + period, checks=0, answered=0, loss_sum=0.0)
    model.objects.create(machine=machine, start=T0, checks=4, answered=3, loss_sum=1.5, rtt_min=1.0, rtt_sum=6.0,
                         rtt_max=3.0, unreachable_seconds=30)
    model.objects.create(machine=machine, start=T0 - period, checks=1, answered=1, loss_sum=0.0)  # before

    points = series.points(machine.pk, resolution, T0, T0 + 2 * period)

    assert points == [
        {"start": T0, "checks": 4, "answered": 3, "loss": 0.375, "rtt_min_ms": 1.0, "rtt_mean_ms": 2.0,
         "rtt_max_ms": 3.0, "unreachable_seconds": 30},
        {"start": T0 + period, "checks": 0, "answered": 0, "loss": None, "rtt_min_ms": None, "rtt_mean_ms": None,
         "rtt_max_ms": None, "unreachable_seconds": 0},
    ]


def test_an_unknown_resolution_is_refused(machine):
    with pytest.raises(ValueError, match="minute"):
        series.points(machine.pk, "minute", T0, T0 + HOUR)


def test_outages_pair_the_logs_unreachable_and_recovered_entries(machine, make_machine):
    _log(machine, "unreachable", T0 + MINUTE)
    _log(machine, "mac_changed", T0 + 2 * MINUTE)
    _log(machine, "recovered", T0 + 5 * MINUTE)
    _log(machine, "unreachable", T0 + 20 * MINUTE)
    _log(make_machine(), "unreachable", T0)

    assert series.outages(machine.pk, T0, T0 + HOUR) == [(T0 + MINUTE, T0 + 5 * MINUTE), (T0 + 20 * MINUTE, None)]


def test_an_outage_open_at_the_start_starts_there(machine):
    _log(machine, "recovered", T0 - 3 * HOUR)
    _log(machine, "unreachable", T0 - 2 * HOUR)
    _log(machine, "recovered", T0 + 5 * MINUTE)

    assert series.outages(machine.pk, T0, T0 + HOUR) == [(T0, T0 + 5 * MINUTE)]
    assert series.outages(machine.pk, T0 + HOUR, T0 + 2 * HOUR) == []


def test_an_outage_across_the_whole_range_and_a_repeated_unreachable_entry(machine):
    _log(machine, "unreachable", T0 - HOUR)
    _log(machine, "unreachable", T0 + MINUTE)  # a restarted monitor: still the same outage

    assert series.outages(machine.pk, T0, T0 + HOUR) == [(T0, None)]
    assert series.outages(machine.pk, T0 - 2 * HOUR, T0 - HOUR) == []
