"""Geometry of the machine page's history charts: checks gathered into time slots, scaled, as SVG path strings.

Pure (samples in, numbers and strings out): the template tag in monitoring/templatetags/history_charts.py reads
the database and words the labels. Every plot is WIDTH units wide and stretched to the page's width
(preserveAspectRatio="none"), so an x is a share of the time range, while y units are pixels: the text around
the plots is never scaled, and stays readable from a 320 px phone to a desktop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

WIDTH = 1000
# Pixels, top to bottom: outage markers, round-trip plot, room for the loss plot's top label, loss plot, time labels.
MARKS, RTT_HEIGHT, GAP, LOSS_HEIGHT, AXIS = 18, 120, 18, 36, 22
RTT_TOP = MARKS
LOSS_TOP = RTT_TOP + RTT_HEIGHT + GAP
HEIGHT = LOSS_TOP + LOSS_HEIGHT + AXIS
# The narrowest outage still drawn, so a five-minute outage shows on a year's chart.
MIN_SPAN = 2.0


@dataclass
class Sample:
    """Checks at one moment (a raw result: checks=1) or over one bucket, in the units the buckets store."""

    at: datetime
    checks: int
    answered: int
    loss_sum: float
    rtt_min: float | None
    rtt_sum: float | None
    rtt_max: float | None


@dataclass
class Slot:
    """The samples of one stretch of the chart, summed so that a mean over many slots stays exact."""

    start: datetime
    end: datetime
    checks: int = 0
    answered: int = 0
    loss_sum: float = 0.0
    rtt_min: float | None = None
    rtt_sum: float = 0.0
    rtt_max: float | None = None

    def add(self, other: Sample | Slot) -> None:
        self.checks += other.checks
        self.answered += other.answered
        self.loss_sum += other.loss_sum
        if other.rtt_max is not None:
            self.rtt_min = other.rtt_min if self.rtt_min is None else min(self.rtt_min, other.rtt_min)
            self.rtt_max = other.rtt_max if self.rtt_max is None else max(self.rtt_max, other.rtt_max)
            self.rtt_sum += other.rtt_sum or 0.0

    @property
    def rtt_mean(self) -> float | None:
        return self.rtt_sum / self.answered if self.answered and self.rtt_max is not None else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.checks if self.checks else None


def slots(samples: list[Sample], since: datetime, until: datetime, width: timedelta) -> list[Slot]:
    """Consecutive slots of `width` from `since` (the last one cut at `until`), each holding its samples."""
    count = math.ceil((until - since) / width)
    grid = [Slot(since + i * width, min(since + (i + 1) * width, until)) for i in range(count)]
    for sample in samples:
        index = (sample.at - since) // width
        if 0 <= index < count:
            grid[index].add(sample)
    return grid


def total(grid: list[Slot]) -> Slot:
    whole = Slot(grid[0].start, grid[-1].end) if grid else Slot(datetime.min, datetime.min)
    for slot in grid:
        whole.add(slot)
    return whole


@dataclass(frozen=True)
class TimeScale:
    since: datetime
    until: datetime

    def x(self, moment: datetime) -> float:
        share = (moment - self.since) / (self.until - self.since)
        return round(min(max(share, 0.0), 1.0) * WIDTH, 1)

    def percent(self, moment: datetime) -> float:
        return round(self.x(moment) / WIDTH * 100, 2)


def nice_scale(value: float | None, steps: int = 4) -> tuple[float, float]:
    """The top of an axis from 0 that shows `value`, and its tick step: 1, 2, 2.5 or 5 × 10ⁿ, at most `steps`
    steps, so the labels read as round numbers."""
    if not value or value <= 0:
        return 1.0, 0.25
    magnitude = 10 ** math.floor(math.log10(value / steps))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude * steps >= value)
    return step * math.ceil(value / step - 1e-9), step


def value_ticks(top: float, step: float) -> list[float]:
    return [round(step * i, 9) for i in range(round(top / step) + 1)]


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _runs(grid: list[Slot], keep: Callable[[Slot], bool]) -> Iterator[list[Slot]]:
    run: list[Slot] = []
    for slot in grid:
        if keep(slot):
            run.append(slot)
        elif run:
            yield run
            run = []
    if run:
        yield run


def _xs(run: list[Slot], scale: TimeScale) -> list[float]:
    # A lone slot is drawn across its width: a line through one point would not show.
    if len(run) == 1:
        return [scale.x(run[0].start), scale.x(run[0].end)]
    return [(scale.x(slot.start) + scale.x(slot.end)) / 2 for slot in run]


def rtt_paths(grid: list[Slot], scale: TimeScale, top: float, height: float = RTT_HEIGHT) -> tuple[str, str]:
    """The min–max band and the mean line. A slot without an answer is a gap in both, never a drop to zero."""

    def y(ms: float) -> str:
        return _n(height - min(ms, top) / top * height)

    band, mean = [], []
    for run in _runs(grid, lambda slot: slot.rtt_mean is not None):
        xs = _xs(run, scale)
        run = run * 2 if len(run) == 1 else run
        mean.append("M" + "L".join(f"{_n(x)},{y(s.rtt_mean)}" for x, s in zip(xs, run, strict=True)))
        highs = [f"{_n(x)},{y(s.rtt_max)}" for x, s in zip(xs, run, strict=True)]
        lows = [f"{_n(x)},{y(s.rtt_min)}" for x, s in zip(xs, run, strict=True)]
        band.append("M" + "L".join(highs + lows[::-1]) + "Z")
    return "".join(band), "".join(mean)


def loss_path(grid: list[Slot], scale: TimeScale, height: float = LOSS_HEIGHT) -> str:
    """One bar per slot with loss; slots with no loss or no checks draw nothing."""
    bars = []
    for slot in grid:
        if slot.loss:
            top = _n(height - min(slot.loss, 1.0) * height)
            bars.append(f"M{_n(scale.x(slot.start))},{_n(height)}V{top}H{_n(scale.x(slot.end))}V{_n(height)}Z")
    return "".join(bars)


@dataclass(frozen=True)
class Span:
    x: float
    width: float
    start: datetime
    end: datetime | None


def spans(outages: list[tuple[datetime, datetime | None]], scale: TimeScale) -> list[Span]:
    """Outages as x ranges; one still open runs to the end of the chart."""
    drawn = []
    for start, end in outages:
        left, right = scale.x(start), scale.x(end or scale.until)
        width = max(right - left, MIN_SPAN)
        drawn.append(Span(min(left, WIDTH - width), width, start, end))
    return drawn


def hits(grid: list[Slot], scale: TimeScale) -> list[tuple[float, float, Slot]]:
    """Where each slot with checks is, for the hover text over it."""
    return [
        (scale.x(slot.start), round(scale.x(slot.end) - scale.x(slot.start), 1), slot) for slot in grid if slot.checks
    ]


def time_ticks(since: datetime, until: datetime, zone: tzinfo, unit: str, step: int) -> list[tuple[datetime, bool]]:
    """Round local times inside (since, until) every `step` hours, days or months in `zone`, each with whether it
    is a major tick (every other one: the ticks a phone keeps)."""
    ticks = []
    if unit == "hour":
        # Every zone is a multiple of 15 minutes off UTC, so some quarter hour is each local full hour.
        moment = datetime.fromtimestamp(since.timestamp() // 900 * 900, UTC)
        while moment < until:
            local = moment.astimezone(zone)
            if moment > since and local.minute == 0 and local.hour % step == 0:
                ticks.append((local, local.hour % (2 * step) == 0))
            moment += timedelta(minutes=15)
        return ticks
    day = since.astimezone(zone).date()
    while (moment := datetime.combine(day, time(), zone)) < until:
        if unit == "day":
            count, day = day.toordinal(), day + timedelta(days=1)
        else:
            count = day.year * 12 + day.month - 1 if day.day == 1 else -1
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        if moment > since and count >= 0 and count % step == 0:
            ticks.append((moment, count % (2 * step) == 0))
    return ticks
