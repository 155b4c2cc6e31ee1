"""Folding raw results into hourly and daily buckets, and pruning each tier only behind the next one."""

import random
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from machines.models import Machine, MachineEvent
from monitoring import history
from monitoring.models import DailyBucket, FoldMark, HourlyBucket, PingResult
from tests.support.processes import ROOT, process_env

H = datetime(2026, 11, 10, 9, tzinfo=UTC)  # an hour start
HOUR = timedelta(hours=1)


def checks(machine, start, outcomes, step=timedelta(minutes=1)):
    """Raw results from `start`, one per step: an outcome is a round trip in ms, or None for a timeout."""
    PingResult.objects.bulk_create(
        PingResult(machine=machine, checked_at=start + n * step, ok=rtt is not None, rtt_ms=rtt,
                   loss=0.0 if rtt is not None else 1.0, failure="" if rtt is not None else "timeout")
        for n, rtt in enumerate(outcomes)
    )


def event(machine, kind, at):
    MachineEvent.objects.create(machine=machine, hostname=machine.hostname, ip_address=machine.ip_address,
                                mac_address=machine.mac_address, kind=kind, created_at=at)


@pytest.mark.django_db
def test_an_hour_becomes_one_bucket_per_machine_once_it_has_settled(make_machine):
    steady, dead = make_machine(), make_machine()
    checks(steady, H, [1.0 + n for n in range(57)] + [None] * 3)
    checks(dead, H + timedelta(minutes=30), [None, None])
    checks(steady, H + HOUR, [5.0])  # the next hour is still open

    assert history.fold_all(history.HOURLY, now=H + HOUR + timedelta(minutes=5)) == 0  # not settled yet
    assert history.fold_all(history.HOURLY, now=H + HOUR + history.SETTLE) == 1

    bucket = HourlyBucket.objects.get(machine=steady, start=H)
    assert (bucket.checks, bucket.answered, bucket.loss_sum) == (60, 57, 3.0)
    assert (bucket.rtt_min, bucket.rtt_max, bucket.rtt_mean) == (1.0, 57.0, 29.0)
    empty = HourlyBucket.objects.get(machine=dead, start=H)
    assert (empty.checks, empty.answered, empty.rtt_mean, empty.loss) == (2, 0, None, 1.0)
    assert not HourlyBucket.objects.filter(start=H + HOUR).exists()
    assert history.mark(history.HOURLY) == H + HOUR


@pytest.mark.django_db
def test_seconds_unreachable_come_from_the_log(make_machine):
    blip, down_before, recovered_before = make_machine(), make_machine(), make_machine()
    for machine in (blip, down_before, recovered_before):
        checks(machine, H, [None, 1.0])
    event(blip, MachineEvent.Kind.UNREACHABLE, H + timedelta(minutes=15))
    event(blip, MachineEvent.Kind.RECOVERED, H + timedelta(minutes=45))
    event(down_before, MachineEvent.Kind.UNREACHABLE, H - timedelta(days=3))
    event(recovered_before, MachineEvent.Kind.UNREACHABLE, H - timedelta(hours=2))
    event(recovered_before, MachineEvent.Kind.RECOVERED, H - timedelta(hours=1, minutes=1))

    history.fold_all(history.HOURLY, now=H + 2 * HOUR)

    seconds = dict(HourlyBucket.objects.values_list("machine_id", "unreachable_seconds"))
    assert seconds == {blip.pk: 1800, down_before.pk: 3600, recovered_before.pk: 0}


@pytest.mark.django_db
def test_a_day_folds_from_its_hours_once_all_are_folded(make_machine):
    machine = make_machine()
    day = datetime(2026, 11, 10, tzinfo=UTC)
    HourlyBucket.objects.bulk_create(
        HourlyBucket(machine=machine, start=day + n * HOUR, checks=60, answered=60 - n % 2, loss_sum=n % 2,
                     rtt_min=1.0 + n, rtt_sum=60.0 * (2 + n), rtt_max=3.0 + n, unreachable_seconds=10 * n)
        for n in range(24)
    )
    FoldMark.objects.create(tier="hour", until=day + 23 * HOUR)
    assert history.fold_all(history.DAILY) == 0  # its last hour is not folded yet

    FoldMark.objects.filter(tier="hour").update(until=day + 24 * HOUR)
    assert history.fold_all(history.DAILY) == 1
    bucket = DailyBucket.objects.get(machine=machine)
    assert bucket.start == day
    assert (bucket.checks, bucket.answered, bucket.loss_sum) == (1440, 1428, 12.0)
    assert (bucket.rtt_min, bucket.rtt_max, bucket.unreachable_seconds) == (1.0, 26.0, 2760)
    assert bucket.rtt_sum == sum(60.0 * (2 + n) for n in range(24))


@pytest.mark.django_db
def test_folding_a_period_again_counts_nothing_twice(make_machine, monkeypatch):
    machines = [make_machine() for _ in range(5)]
    for machine in machines:
        checks(machine, H, [2.0] * 30 + [None] * 30)
    monkeypatch.setattr(history, "SLICE", 2)
    # A fold that stops after one slice (a crash) and a new folder that starts the hour over.
    assert history.fold_period(history.HOURLY, H) == machines[1].pk
    assert HourlyBucket.objects.count() == 2 and history.mark(history.HOURLY) is None
    history.fold_all(history.HOURLY, now=H + 2 * HOUR)
    # And a whole hour folded a second time, as a monitor that lost its mark would.
    FoldMark.objects.filter(tier="hour").update(until=H)
    history.fold_all(history.HOURLY, now=H + 2 * HOUR)

    assert list(HourlyBucket.objects.order_by("machine_id").values_list("checks", "answered")) == [(60, 30)] * 5


@pytest.mark.django_db
def test_the_mark_never_moves_back():
    FoldMark.objects.create(tier="hour", until=H + 5 * HOUR)
    history._set_mark(history.HOURLY, H + HOUR)
    assert history.mark(history.HOURLY) == H + 5 * HOUR


@pytest.mark.django_db
def test_raw_results_are_pruned_only_once_folded_and_past_retention(make_machine, settings):
    settings.RAW_RETENTION_HOURS = 48
    machine = make_machine()
    now = H + 50 * HOUR
    checks(machine, H, [1.0] * 60)  # 50 hours old
    checks(machine, now - 2 * HOUR, [1.0] * 60)  # recent

    assert history.prune_raw(now) == 0  # nothing folded yet: nothing may go
    history.fold_all(history.HOURLY, now=now)
    assert history.prune_raw(now) == 60
    assert PingResult.objects.filter(checked_at__lt=now - 48 * HOUR).count() == 0
    assert PingResult.objects.count() == 60
    assert HourlyBucket.objects.get(start=H).checks == 60  # the history of the pruned hour stays


@pytest.mark.django_db
def test_hours_outlive_retention_until_their_day_is_folded_and_days_expire(make_machine, settings):
    settings.HOURLY_RETENTION_DAYS, settings.DAILY_RETENTION_DAYS = 90, 730
    machine = make_machine()
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    old_day = now.replace(hour=0) - timedelta(days=100)
    HourlyBucket.objects.bulk_create(
        HourlyBucket(machine=machine, start=old_day + n * HOUR, checks=1, answered=1, loss_sum=0) for n in range(24)
    )
    DailyBucket.objects.create(machine=machine, start=now.replace(hour=0) - timedelta(days=731), checks=1,
                               answered=1, loss_sum=0)

    assert history.prune_buckets(history.HOURLY, now) == 0  # its day is not folded yet
    FoldMark.objects.create(tier="hour", until=old_day + timedelta(days=1))
    history.fold_all(history.DAILY, now)
    assert history.prune_buckets(history.HOURLY, now) == 1  # one period at a time
    while history.prune_buckets(history.HOURLY, now):
        pass
    assert not HourlyBucket.objects.exists()
    assert DailyBucket.objects.filter(start=old_day).get().checks == 24
    assert history.prune_buckets(history.DAILY, now) == 1
    assert list(DailyBucket.objects.values_list("start", flat=True)) == [old_day]


@pytest.mark.django_db
def test_deleting_a_machine_deletes_its_buckets(make_machine):
    machine, other = make_machine(), make_machine()
    for each in (machine, other):
        checks(each, H, [1.0])
    history.fold_all(history.HOURLY, now=H + 2 * HOUR)
    history.fold_all(history.DAILY, now=H + 2 * HOUR)
    machine.delete()
    assert list(HourlyBucket.objects.values_list("machine_id", flat=True)) == [other.pk]


@pytest.mark.django_db(transaction=True)
def test_a_fold_killed_at_random_points_loses_and_doubles_nothing(tmp_path):
    """`manage.py history --catch-up` killed with SIGKILL again and again until it finishes by itself: every
    generated check is in exactly one hourly bucket, days add up, and only folded raw results were pruned."""
    rng = random.Random(7)
    machines = [Machine.objects.create(hostname=f"h{n}", ip_address=f"127.0.70.{n}", mac_address="02:00:00:00:00:01")
                for n in range(1, 41)]
    first = history.floor(timezone.now(), HOUR) - 60 * HOUR  # 60 hours: the oldest 12 pass raw retention
    expected = defaultdict(lambda: [0, 0])
    rows = []
    for machine in machines:
        for minute in range(0, 36 * 60, 2):
            at = first + timedelta(minutes=minute, seconds=rng.randrange(60))
            ok = rng.random() > 0.1
            rows.append(PingResult(machine=machine, checked_at=at, ok=ok, rtt_ms=1.0 if ok else None))
            bucket = expected[(machine.pk, history.floor(at, HOUR))]
            bucket[0] += 1
            bucket[1] += ok
    PingResult.objects.bulk_create(rows, batch_size=5000)
    env = process_env()
    argv = [sys.executable, "manage.py", "history", "--catch-up", "--slice", "3"]

    kills, partial = 0, 0
    started = timezone.now()
    for attempt in range(60):
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            # Longer and longer lives, so a loaded machine (slow start-up) still lets it finish in the end.
            process.wait(timeout=rng.uniform(0.8, 3.0) * (1 + attempt / 8))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
            buckets = HourlyBucket.objects.count()
            partial += 0 < buckets < len(expected)
            continue
        output = process.stdout.read().decode()
        assert process.returncode == 0, output
        assert "up to date" in output
        break
    else:
        pytest.fail("the fold never finished")
    assert kills and partial, f"no kill landed mid-fold ({kills} kills)"

    got = {(machine_id, start): [n, up] for machine_id, start, n, up in
           HourlyBucket.objects.values_list("machine_id", "start", "checks", "answered")}
    assert got == dict(expected)
    days = defaultdict(lambda: [0, 0])
    for (machine_id, start), (n, up) in expected.items():
        if start + HOUR <= history.floor(history.mark(history.HOURLY), timedelta(days=1)):
            days[(machine_id, history.floor(start, timedelta(days=1)))][0] += n
            days[(machine_id, history.floor(start, timedelta(days=1)))][1] += up
    assert {(m, s): [n, up] for m, s, n, up in
            DailyBucket.objects.values_list("machine_id", "start", "checks", "answered")} == dict(days)
    # Raw results went exactly when they were past retention (and folded): bounded by the run's start and end.
    remaining = PingResult.objects.count()
    kept_at_end = sum(row.checked_at >= timezone.now() - 48 * HOUR for row in rows)
    kept_at_start = sum(row.checked_at >= started - 48 * HOUR for row in rows)
    assert kept_at_end <= remaining <= kept_at_start < len(rows)
