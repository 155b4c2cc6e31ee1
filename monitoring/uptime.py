"""Uptime: the answered share of a machine's checks over the last 24 h, 7 d, 30 d and 365 d.

A window [S, now) is read from the finest tier that still holds it, and every check is counted exactly once:

- Raw results alone when S is inside the raw retention: they are complete from now - RAW_RETENTION_HOURS on,
  since pruning never passes it (nor the hourly mark F). Before the first hourly fold nothing older is read.
- Otherwise raw results for [F, now) and buckets for [floor_hour(S), F): daily buckets for the whole days
  before the daily mark D, hourly buckets for the rest ([D, F) and the part of the first day after
  floor_hour(S)). A daily bucket is the sum of its day's hourly buckets, so where the border lies changes
  only how many rows are read. Where that first day's hourly buckets are pruned already (past
  HOURLY_RETENTION_DAYS), its whole daily bucket is counted.

So a window reaching past the raw retention begins at the hour S falls in (past the hourly retention, the day).
uptime() reads each tier with one aggregate query for all four windows; refresh_uptime_30d one per span and tier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Case, Count, FloatField, Q, Sum, Value, When
from django.utils import timezone

from machines.models import Machine

from .history import DAY, HOUR, floor
from .models import DailyBucket, FoldMark, HourlyBucket, PingResult

WINDOWS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "365d": timedelta(days=365),
}
# Machines per refresh_uptime_30d call: a few aggregate queries and one UPDATE each.
SLICE = 2000

Span = tuple[datetime, datetime]  # [from, to)


@dataclass(frozen=True)
class _Source:
    model: type
    field: str  # the time each row is filed under
    checks: Callable[[Q], Aggregate]  # what a row counts as checks, and as answered ones, under a filter
    answered: Callable[[Q], Aggregate]

    def rows(self, spans: list[Span]) -> Q:
        return reduce(or_, (Q(**{f"{self.field}__gte": lo, f"{self.field}__lt": hi}) for lo, hi in spans))


# The three tiers, finest first.
_SOURCES = (
    _Source(PingResult, "checked_at", lambda q: Count("pk", filter=q), lambda q: Count("pk", filter=q & Q(ok=True))),
    _Source(HourlyBucket, "start", lambda q: Sum("checks", filter=q), lambda q: Sum("answered", filter=q)),
    _Source(DailyBucket, "start", lambda q: Sum("checks", filter=q), lambda q: Sum("answered", filter=q)),
)

Plan = tuple[list[Span], list[Span], list[Span]]  # what a window counts of each tier: raw, hourly, daily


def _ceil(moment: datetime, period: timedelta) -> datetime:
    start = floor(moment, period)
    return start if start == moment else start + period


def _marks() -> tuple[datetime | None, datetime | None]:
    marks = dict(FoldMark.objects.values_list("tier", "until"))
    return marks.get("hour"), marks.get("day")


def _plan(start: datetime, now: datetime, hour_mark: datetime | None, day_mark: datetime | None) -> Plan:
    """Which spans of each tier count for the window [start, now)."""
    raw_floor = now - timedelta(hours=settings.RAW_RETENTION_HOURS)
    if hour_mark is None:
        return [(max(start, raw_floor), now)], [], []
    if start >= raw_floor or start >= hour_mark:
        # Raw results are never pruned past either, so they hold every check since `start`.
        return [(start, now)], [], []
    raw = [(hour_mark, now)]
    first = floor(start, HOUR)
    if day_mark is None or first >= day_mark:
        return raw, [(first, hour_mark)], []
    # first < day_mark: whole days from the daily tier, the rest from the hourly one.
    first_day_end = _ceil(first, DAY)  # <= day_mark, which is a day boundary
    hourly = [(day_mark, hour_mark)]
    daily = [(first_day_end, day_mark)]
    if first < first_day_end:
        if first >= now - timedelta(days=settings.HOURLY_RETENTION_DAYS):
            hourly.append((first, first_day_end))
        else:
            daily = [(first_day_end - DAY, day_mark)]
    return raw, [span for span in hourly if span[0] < span[1]], [span for span in daily if span[0] < span[1]]


def uptime(machine: Machine | int, now: datetime | None = None) -> dict[str, float | None]:
    """{"24h": …, "7d": …, "30d": …, "365d": …}: answered checks / checks in each window, None without checks."""
    now = now or timezone.now()
    machine_id = getattr(machine, "pk", machine)
    marks = _marks()
    plans = {name: _plan(now - length, now, *marks) for name, length in WINDOWS.items()}
    totals = {name: [0, 0] for name in WINDOWS}
    for tier, source in enumerate(_SOURCES):
        # One query per tier: each window's sums under its own filter.
        parts = {name: source.rows(plan[tier]) for name, plan in plans.items() if plan[tier]}
        if not parts:
            continue
        aggregates = {}
        for n, q in enumerate(parts.values()):
            aggregates[f"checks{n}"] = source.checks(q)
            aggregates[f"answered{n}"] = source.answered(q)
        row = source.model.objects.filter(reduce(or_, parts.values()), machine_id=machine_id).aggregate(**aggregates)
        for n, name in enumerate(parts):
            totals[name][0] += row[f"checks{n}"] or 0
            totals[name][1] += row[f"answered{n}"] or 0
    return {name: (up / n if n else None) for name, (n, up) in totals.items()}


def refresh_uptime_30d(after_machine: int = 0, now: datetime | None = None) -> int | None:
    """Recompute Machine.uptime_30d for one slice of machines with ids above `after_machine`; returns the last
    id of the slice to continue from, or None when every machine is done."""
    now = now or timezone.now()
    ids = list(Machine.objects.filter(pk__gt=after_machine).order_by("pk").values_list("pk", flat=True)[:SLICE])
    if not ids:
        return None
    plan = _plan(now - WINDOWS["30d"], now, *_marks())
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for spans, source in zip(plan, _SOURCES, strict=True):
        # A query per span: the planner reads one range of the time index for each, where a filter with OR
        # would scan the whole table.
        for span in spans:
            rows = (
                source.model.objects.filter(source.rows([span]), machine_id__gt=after_machine, machine_id__lte=ids[-1])
                .values("machine_id").annotate(n=source.checks(Q()), up=source.answered(Q())).order_by()
            )
            for row in rows:
                totals[row["machine_id"]][0] += row["n"] or 0
                totals[row["machine_id"]][1] += row["up"] or 0
    _write_uptime(ids, {pk: up / n for pk, (n, up) in totals.items() if n})
    return ids[-1] if len(ids) == SLICE else None


def _write_uptime(ids: list[int], values: dict[int, float]) -> None:
    """Set uptime_30d of the machines `ids` (ascending) in one UPDATE: its value in `values`, else NULL."""
    if connection.vendor != "postgresql":
        whens = [When(pk=pk, then=Value(value)) for pk, value in values.items()]
        uptime = Case(*whens, default=None, output_field=FloatField()) if whens else None
        Machine.objects.filter(pk__gte=ids[0], pk__lte=ids[-1]).update(uptime_30d=uptime)
        return
    # A CASE of 2,000 branches is compared branch by branch for every row; a join with two arrays is not.
    quote = connection.ops.quote_name
    meta = Machine._meta
    table, pk, column = quote(meta.db_table), quote(meta.pk.column), quote(meta.get_field("uptime_30d").column)
    # Identifiers only come from the model's _meta; every value is a parameter.
    sql = (
        f"UPDATE {table} AS m SET {column} = v.uptime "  # noqa: S608
        f"FROM unnest(%s::{meta.pk.db_type(connection)}[], %s::double precision[]) AS v(id, uptime) "
        f"WHERE m.{pk} = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, [values.get(pk) for pk in ids]])
