"""The history chart: slots, scales and paths (monitoring/charts.py) and what the machine page's tag draws."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone, translation

from machines.models import MachineEvent
from monitoring import charts
from monitoring.models import DailyBucket, HourlyBucket, PingResult

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _sample(at, rtt=None, checks=1, loss=None):
    answered = checks if rtt is not None else 0
    loss_sum = (0.0 if rtt is not None else float(checks)) if loss is None else loss * checks
    return charts.Sample(at, checks, answered, loss_sum, rtt, None if rtt is None else rtt * answered, rtt)


def _numbers(path: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path)]


# -- geometry ---------------------------------------------------------------------------------------------------


def test_samples_fall_into_their_slots_and_sum_exactly():
    grid = charts.slots([_sample(T0, 1.0), _sample(T0 + MINUTE, 3.0), _sample(T0 + 7 * MINUTE, None),
                         _sample(T0 - MINUTE, 99.0), _sample(T0 + HOUR, 99.0)],
                        T0, T0 + 12 * MINUTE, timedelta(minutes=5))
    assert [(slot.start, slot.end) for slot in grid][-1] == (T0 + 10 * MINUTE, T0 + 12 * MINUTE)  # cut at the end
    first, second, third = grid
    assert (first.checks, first.rtt_min, first.rtt_mean, first.rtt_max, first.loss) == (2, 1.0, 2.0, 3.0, 0.0)
    assert (second.checks, second.rtt_mean, second.loss) == (1, None, 1.0)
    assert third.checks == 0 and third.loss is None
    whole = charts.total(grid)
    assert (whole.checks, whole.answered, whole.rtt_mean) == (3, 2, 2.0)


def test_a_slot_without_answers_is_a_gap_in_the_round_trip_not_a_drop_to_zero():
    scale = charts.TimeScale(T0, T0 + 4 * HOUR)
    grid = charts.slots([_sample(T0, 1.0), _sample(T0 + HOUR, 2.0), _sample(T0 + 2 * HOUR, None),
                         _sample(T0 + 3 * HOUR, 4.0)], T0, T0 + 4 * HOUR, HOUR)
    band, mean = charts.rtt_paths(grid, scale, top=4.0, height=100)
    # Two runs: the first two hours (through their middles), then the last hour alone (across its width).
    assert mean == "M125,75L375,50M750,0L1000,0"
    assert band.count("M") == 2 and band.count("Z") == 2
    assert all(0 <= n <= 1000 for n in _numbers(band))


def test_the_band_runs_along_the_slowest_and_back_along_the_fastest():
    grid = charts.slots([_sample(T0, 1.0), _sample(T0 + MINUTE, 3.0), _sample(T0 + HOUR, 2.0)], T0, T0 + 2 * HOUR,
                        HOUR)
    band, _ = charts.rtt_paths(grid, charts.TimeScale(T0, T0 + 2 * HOUR), top=4.0, height=100)
    assert band == "M250,25L750,50L750,50L250,75Z"


def test_round_trips_above_the_top_are_drawn_at_the_top():
    grid = charts.slots([_sample(T0, 50.0)], T0, T0 + HOUR, HOUR)
    _, mean = charts.rtt_paths(grid, charts.TimeScale(T0, T0 + HOUR), top=10.0, height=100)
    assert mean == "M0,0L1000,0"


def test_loss_is_a_bar_per_slot_with_loss():
    grid = charts.slots([_sample(T0, 1.0), _sample(T0 + HOUR, 1.0, loss=0.5), _sample(T0 + 2 * HOUR, None)],
                        T0, T0 + 4 * HOUR, HOUR)
    path = charts.loss_path(grid, charts.TimeScale(T0, T0 + 4 * HOUR), height=40)
    assert path == "M250,40V20H500V40ZM500,40V0H750V40Z"
    assert charts.loss_path(charts.slots([], T0, T0 + HOUR, HOUR), charts.TimeScale(T0, T0 + HOUR)) == ""


def test_outage_spans_are_clipped_to_the_range_and_never_too_thin_to_see():
    scale = charts.TimeScale(T0, T0 + 10 * DAY)
    drawn = charts.spans([(T0 - DAY, T0 + DAY), (T0 + 5 * DAY, T0 + 5 * DAY + MINUTE), (T0 + 9 * DAY, None)], scale)
    assert [(span.x, span.width) for span in drawn] == [(0.0, 100.0), (500.0, charts.MIN_SPAN), (900.0, 100.0)]
    assert drawn[2].end is None


def test_hover_areas_only_where_there_were_checks():
    grid = charts.slots([_sample(T0 + HOUR, 1.0)], T0, T0 + 4 * HOUR, HOUR)
    assert [(x, width) for x, width, _ in charts.hits(grid, charts.TimeScale(T0, T0 + 4 * HOUR))] == [(250.0, 250.0)]


@pytest.mark.parametrize(("value", "top", "ticks"), [
    (None, 1.0, [0, 0.25, 0.5, 0.75, 1.0]),
    (0.37, 0.4, [0, 0.1, 0.2, 0.3, 0.4]),
    (5, 6, [0, 2, 4, 6]),
    (12.3, 15, [0, 5, 10, 15]),
    (250, 300, [0, 100, 200, 300]),
])
def test_the_round_trip_axis_ends_on_a_round_number(value, top, ticks):
    scale_top, step = charts.nice_scale(value)
    assert scale_top == pytest.approx(top) and charts.value_ticks(scale_top, step) == pytest.approx(ticks)


def test_time_ticks_are_round_hours_of_the_viewers_zone():
    since = datetime(2025, 3, 1, 12, 7, tzinfo=UTC)
    tokyo = charts.time_ticks(since, since + DAY, ZoneInfo("Asia/Tokyo"), "hour", 3)
    assert [f"{moment:%H:%M}" for moment, _ in tokyo] == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00",
                                                           "18:00", "21:00"]
    assert [major for _, major in tokyo] == [True, False] * 4
    # Half-hour zones too: their full hours are half past in UTC.
    kolkata = charts.time_ticks(since, since + DAY, ZoneInfo("Asia/Kolkata"), "hour", 6)
    assert [f"{moment:%H:%M}" for moment, _ in kolkata] == ["18:00", "00:00", "06:00", "12:00"]


def test_day_and_month_ticks_are_local_midnights_across_a_dst_change():
    berlin = ZoneInfo("Europe/Berlin")
    since, until = datetime(2025, 3, 28, 12, tzinfo=UTC), datetime(2025, 3, 31, 20, tzinfo=UTC)
    days = charts.time_ticks(since, until, berlin, "day", 1)
    assert [moment.isoformat() for moment, _ in days] == [
        "2025-03-29T00:00:00+01:00", "2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"]
    months = charts.time_ticks(datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 5, 15, tzinfo=UTC), berlin, "month", 1)
    assert [(f"{moment:%m-%d %H:%M}", major) for moment, major in months] == [
        ("02-01 00:00", False), ("03-01 00:00", True), ("04-01 00:00", False), ("05-01 00:00", True)]


# -- the machine page's tag -------------------------------------------------------------------------------------


def _render(machine, history: str = "") -> str:
    request = RequestFactory().get("/machines/1/", {"history": history} if history else {})
    template = Template("{% load history_charts %}{% history_charts machine %}")
    return template.render(Context({"machine": machine, "request": request}))


def _log(machine, kind, at):
    MachineEvent.objects.create(machine=machine, hostname=machine.hostname, ip_address=machine.ip_address,
                                mac_address=machine.mac_address, kind=kind, created_at=at)


@pytest.fixture
def now(monkeypatch):
    moment = datetime(2025, 3, 1, 12, 2, 30, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment


@pytest.mark.django_db
def test_a_machine_without_history_says_so_and_draws_nothing(make_machine, now):
    html = _render(make_machine())
    assert "No checks in this period." in html and "<svg" not in html
    assert 'href="?history=7d#history"' in html and 'aria-current="page">24 hours<' in html


@pytest.mark.django_db
def test_the_day_is_drawn_from_raw_results_with_labels_in_the_viewers_zone(make_machine, now):
    machine = make_machine()
    for minute in range(0, 24 * 60, 5):
        ok = not 600 <= minute < 630
        PingResult.objects.create(machine=machine, checked_at=now - timedelta(minutes=minute, seconds=30), ok=ok,
                                  rtt_ms=0.5 + minute % 3 if ok else None, loss=0.0 if ok else 1.0)
    _log(machine, "unreachable", now - timedelta(minutes=629))
    _log(machine, "recovered", now - timedelta(minutes=599))

    with timezone.override(ZoneInfo("Asia/Tokyo")), translation.override("en"):
        html = _render(machine)

    assert html.count('class="chart-hit"') == 288
    mean = re.search(r'class="chart-mean" d="([^"]+)"', html)[1]
    assert mean.count("M") == 2  # the outage breaks the line
    assert re.search(r'class="chart-loss" d="M[^"]+"', html)
    assert html.count('class="chart-outage"') == 2 and "Unreachable 2025-03-01 " in html
    # 12:02 UTC is 21:02 in Tokyo: the ticks are Tokyo's round hours, the hover text Tokyo's times.
    assert re.findall(r'chart-time[^>]*>([^<]+)<', html)[:2] == ["00:00", "03:00"]
    assert "2025-03-01 21:00–21:02: 1 check, loss 0%, round trip" in html
    assert ">3 ms<" in html and ">100%<" in html
    assert "288 checks, 97.9% answered." in html and "Unreachable 1 time, for 30\xa0minutes." in html


@pytest.mark.django_db
def test_a_week_joins_hourly_buckets_and_the_raw_results_after_the_last_one(make_machine, now):
    machine = make_machine()
    folded_until = now.replace(minute=0, second=0) - HOUR
    for hours in range(1, 24 * 7):
        HourlyBucket.objects.create(machine=machine, start=folded_until - hours * HOUR, checks=60, answered=60,
                                    loss_sum=0.0, rtt_min=1.0, rtt_sum=120.0, rtt_max=4.0)
    PingResult.objects.create(machine=machine, checked_at=folded_until - 2 * HOUR, ok=True, rtt_ms=50.0)  # folded
    for minutes in range(0, 60):
        PingResult.objects.create(machine=machine, checked_at=folded_until + minutes * MINUTE, ok=True, rtt_ms=2.0)

    html = _render(machine, "7d")

    assert 'aria-current="page">7 days<' in html
    assert "10,080 checks, 100% answered." in html  # 167 × 60 + 60, the folded result not again
    assert "from 1.00 to 4.00 ms" in html


@pytest.mark.django_db
def test_a_year_is_drawn_from_daily_buckets_with_month_labels(make_machine, now, django_assert_max_num_queries):
    machine = make_machine()
    for days in range(1, 365):
        DailyBucket.objects.create(machine=machine, start=now.replace(hour=0, minute=0, second=0) - days * DAY,
                                   checks=1440, answered=1440 - days % 7, loss_sum=days % 7, rtt_min=0.2,
                                   rtt_sum=0.5 * (1440 - days % 7), rtt_max=2.0)
    # Days, hours after the last day, raw results after the last hour, and the log twice.
    with translation.override("en"), django_assert_max_num_queries(5):
        html = _render(machine, "1y")
    assert html.count('class="chart-hit"') == 364
    assert re.findall(r'chart-time[^>]*>([^<]+)<', html)[:3] == ["Apr", "May", "Jun"]
    assert "No outages." in html


@pytest.mark.django_db
def test_an_outage_without_checks_is_still_drawn(make_machine, now):
    machine = make_machine()
    _log(machine, "unreachable", now - 3 * DAY)
    html = _render(machine, "30d")
    assert "<svg" in html and html.count('class="chart-outage-mark"') == 1
    assert "Unreachable since 2025-02-26 12:02" in html and "No checks in this period." in html


def test_the_chart_css_uses_only_the_schemes_colours():
    css = (Path(__file__).resolve().parents[2] / "static" / "css" / "app.css").read_text()
    block = css[css.index("/* history charts"):]
    block = block[: block.index("\n/* ", 1)] if "\n/* " in block[1:] else block
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b|rgb\(", block), "colours must come from the scheme's variables"
