"""Uptime over 24 h, 7 d, 30 d and 365 d from raw results and buckets: every check counted exactly once."""

from datetime import UTC, datetime, timedelta

import pytest

from machines.models import Machine
from monitoring import history, uptime
from monitoring.models import DailyBucket, FoldMark, HourlyBucket, PingResult

NOW = datetime(2026, 11, 10, 12, 30, tzinfo=UTC)
HOUR_MARK = datetime(2026, 11, 10, 12, tzinfo=UTC)  # what the monitor leaves at NOW: hours settle for 10 minutes
DAY_MARK = datetime(2026, 11, 9, tzinfo=UTC)


@pytest.fixture(autouse=True)
def retention(settings):
    settings.RAW_RETENTION_HOURS = 48
    settings.HOURLY_RETENTION_DAYS = 90
    settings.DAILY_RETENTION_DAYS = 730


def ping(machine, at, ok=True):
    PingResult.objects.create(machine=machine, checked_at=at, ok=ok, rtt_ms=1.0 if ok else None,
                              loss=0.0 if ok else 1.0, failure="" if ok else "timeout")


def bucket(model, machine, start, checks, answered):
    model.objects.create(machine=machine, start=start, checks=checks, answered=answered,
                         loss_sum=float(checks - answered))


def marks(hour=HOUR_MARK, day=DAY_MARK):
    FoldMark.objects.create(tier="hour", until=hour)
    if day:
        FoldMark.objects.create(tier="day", until=day)


def folded_history(machine):
    """Buckets and raw results as the folds leave them at NOW, with a distinct count on each side of each
    border, so a check counted twice or not at all changes the result."""
    marks()
    # A year ago: the 365-day window begins during 2025-11-10, whose hours are long pruned.
    bucket(DailyBucket, machine, datetime(2025, 11, 9, tzinfo=UTC), 100, 0)
    bucket(DailyBucket, machine, datetime(2025, 11, 10, tzinfo=UTC), 100, 50)
    # A week ago: the 7-day window begins at 2026-11-03 12:00; that day's hours are still kept.
    bucket(DailyBucket, machine, datetime(2026, 11, 3, tzinfo=UTC), 1440, 1380)
    bucket(HourlyBucket, machine, datetime(2026, 11, 3, 11, tzinfo=UTC), 60, 0)
    bucket(HourlyBucket, machine, datetime(2026, 11, 3, 12, tzinfo=UTC), 60, 60)
    # The day/hour border: the last hour of the last folded day is in its day; the day mark's hour is not.
    bucket(DailyBucket, machine, datetime(2026, 11, 8, tzinfo=UTC), 1440, 1380)
    bucket(HourlyBucket, machine, datetime(2026, 11, 8, 23, tzinfo=UTC), 60, 0)
    bucket(HourlyBucket, machine, DAY_MARK, 60, 30)
    # The hour/raw border: the last folded hour holds the failed check a second before the mark.
    bucket(HourlyBucket, machine, HOUR_MARK - timedelta(hours=1), 60, 59)
    ping(machine, HOUR_MARK - timedelta(seconds=1), ok=False)
    ping(machine, HOUR_MARK)
    ping(machine, NOW - timedelta(seconds=1))


@pytest.mark.django_db
def test_a_machine_never_checked_has_no_uptime(make_machine):
    machine, other = make_machine(), make_machine()
    ping(other, NOW - timedelta(minutes=5))
    assert uptime.uptime(machine, now=NOW) == {"24h": None, "7d": None, "30d": None, "365d": None}


@pytest.mark.django_db
def test_each_window_counts_each_check_once_from_the_finest_tier_that_holds_it(make_machine):
    machine = make_machine()
    folded_history(machine)
    result = uptime.uptime(machine, now=NOW)
    # 24 h: raw results only, including the one the last hourly bucket holds too.
    assert result["24h"] == 2 / 3
    # 7 d from 2026-11-03 12:00: that hour, the day of 11-08, the hours from the day mark, two raw results.
    assert result["7d"] == (60 + 1380 + 30 + 59 + 2) / (60 + 1440 + 60 + 60 + 2)
    # 30 d: whole days 11-03 and 11-08, the hours from the day mark, the raw results after the hour mark.
    assert result["30d"] == (1380 * 2 + 30 + 59 + 2) / (1440 * 2 + 60 + 60 + 2)
    # 365 d: the first day whole (its hours are pruned), then as 30 d.
    assert result["365d"] == (50 + 1380 * 2 + 30 + 59 + 2) / (100 + 1440 * 2 + 60 + 60 + 2)


@pytest.mark.django_db
def test_the_24_hour_window_starts_exactly_24_hours_ago(make_machine):
    machine = make_machine()
    marks()
    ping(machine, NOW - timedelta(hours=24, microseconds=1), ok=False)
    ping(machine, NOW - timedelta(hours=24))
    ping(machine, NOW, ok=False)  # not before now
    assert uptime.uptime(machine, now=NOW)["24h"] == 1.0


@pytest.mark.django_db
def test_real_folds_and_pruning_count_every_check_once_across_the_hour_mark(make_machine):
    """Three days of checks, folded into hours and pruned to the raw retention as the monitor does."""
    machine = make_machine()
    start = NOW - timedelta(days=3)
    minutes = int((NOW - start) / timedelta(minutes=1))
    # Failures early on and near the marks, so counting any stretch twice or not at all moves the result.
    outcomes = [(n % 7 != 0) if n < 1000 else (n % 3 != 0) for n in range(minutes)]
    PingResult.objects.bulk_create(
        PingResult(machine=machine, checked_at=start + timedelta(minutes=n), ok=ok) for n, ok in enumerate(outcomes)
    )
    assert history.fold_all(history.HOURLY, now=NOW) == 72
    assert history.mark(history.HOURLY) == HOUR_MARK
    while history.prune_raw(now=NOW):
        pass
    assert PingResult.objects.filter(checked_at__lt=NOW - timedelta(hours=48)).count() == 0
    assert PingResult.objects.filter(checked_at__lt=HOUR_MARK).exists()  # folded and kept: in two tiers

    result = uptime.uptime(machine, now=NOW)
    assert result["7d"] == result["30d"] == result["365d"] == sum(outcomes) / len(outcomes)
    last_day = outcomes[-24 * 60:]
    assert result["24h"] == sum(last_day) / len(last_day)


@pytest.mark.django_db
def test_before_the_first_fold_only_the_raw_window_is_read(make_machine):
    machine = make_machine()
    ping(machine, NOW - timedelta(hours=49), ok=False)  # past the raw retention, about to be folded
    ping(machine, NOW - timedelta(hours=47))
    assert uptime.uptime(machine, now=NOW) == {"24h": None, "7d": 1.0, "30d": 1.0, "365d": 1.0}


@pytest.mark.django_db
def test_a_lagging_fold_leaves_raw_results_counted_once(make_machine):
    # The monitor was away: hours are folded only up to ten days ago, so nothing since is pruned.
    machine = make_machine()
    hour_mark = datetime(2026, 10, 31, 12, tzinfo=UTC)
    marks(hour=hour_mark, day=datetime(2026, 10, 30, tzinfo=UTC))
    bucket(HourlyBucket, machine, hour_mark - timedelta(hours=1), 60, 0)
    ping(machine, NOW - timedelta(days=8), ok=False)
    ping(machine, NOW - timedelta(days=6))
    result = uptime.uptime(machine, now=NOW)
    assert result["7d"] == 1.0
    assert result["30d"] == 1 / 62


@pytest.mark.django_db
def test_uptime_costs_a_few_queries_whatever_the_history(make_machine, django_assert_max_num_queries):
    machine = make_machine()
    folded_history(machine)
    with django_assert_max_num_queries(4):
        uptime.uptime(machine, now=NOW)


@pytest.mark.django_db
def test_refresh_writes_30_day_uptime_slice_by_slice(make_machine, monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr(uptime, "SLICE", 2)
    machines = [make_machine(uptime_30d=0.5) for _ in range(5)]
    folded_history(machines[0])
    for minutes, ok in [(3, False), (2, True), (1, True)]:
        ping(machines[1], NOW - timedelta(minutes=minutes), ok=ok)
    # machines[2] has no check: its stale value goes.
    bucket(DailyBucket, machines[3], datetime(2026, 10, 1, tzinfo=UTC), 10, 10)  # before the 30 days
    bucket(HourlyBucket, machines[4], DAY_MARK + timedelta(hours=5), 4, 3)

    # The slice's ids, the marks, one query per span of each tier (raw, hourly twice, daily), one UPDATE.
    with django_assert_max_num_queries(7):
        after = uptime.refresh_uptime_30d(0, now=NOW)
    assert after == machines[1].pk
    assert uptime.refresh_uptime_30d(after, now=NOW) == machines[3].pk
    assert uptime.refresh_uptime_30d(machines[3].pk, now=NOW) is None
    assert uptime.refresh_uptime_30d(machines[4].pk, now=NOW) is None

    stored = dict(Machine.objects.values_list("pk", "uptime_30d"))
    assert [stored[m.pk] for m in machines] == [
        uptime.uptime(machines[0], now=NOW)["30d"], 2 / 3, None, None, 0.75,
    ]
    assert stored[machines[0].pk] == (1380 * 2 + 30 + 59 + 2) / (1440 * 2 + 60 + 60 + 2)


@pytest.mark.django_db
def test_refresh_clears_every_value_when_nothing_was_checked(make_machine):
    machines = [make_machine(uptime_30d=0.9) for _ in range(3)]
    marks()
    assert uptime.refresh_uptime_30d(0, now=NOW) is None
    assert list(Machine.objects.filter(pk__in=[m.pk for m in machines]).values_list("uptime_30d", flat=True)) == [
        None, None, None,
    ]


@pytest.mark.django_db
def test_the_machine_api_reports_uptime(client, api_token, make_machine):
    from django.utils import timezone

    machine = make_machine()
    now = timezone.now()
    ping(machine, now - timedelta(hours=2), ok=False)
    for minutes in (1, 2, 3):
        ping(machine, now - timedelta(minutes=minutes))
    response = client.get(f"/api/machines/{machine.pk}", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 200
    assert response.json()["uptime"] == {"24h": 0.75, "7d": 0.75, "30d": 0.75, "365d": 0.75}
    assert response.json()["hostname"] == machine.hostname


@pytest.mark.django_db
def test_the_machine_page_shows_uptime_over_each_window(operator_client, make_machine):
    from django.utils import timezone

    machine = make_machine()
    now = timezone.now()
    for minutes, ok in [(120, False), (3, True), (2, True), (1, True)]:
        ping(machine, now - timedelta(minutes=minutes), ok=ok)
    html = operator_client.get(f"/machines/{machine.pk}").content.decode()
    for window in ("last 24 hours", "last 7 days", "last 30 days", "last 365 days"):
        assert f'<dt>Uptime, {window}</dt><dd class="cell-uptime">75.00 %</dd>' in html
    never = make_machine()
    html = operator_client.get(f"/machines/{never.pk}").content.decode()
    assert '<dt>Uptime, last 30 days</dt><dd class="cell-uptime">—</dd>' in html
