"""History in three tiers: raw check results, hourly buckets folded from them, daily buckets folded from those.

A fold writes one period (an hour, a day) for one slice of machines per transaction, with INSERT … ON CONFLICT
DO NOTHING on the bucket's (machine, start) key, and moves the tier's FoldMark past a period only once every
slice of it is written. A fold killed at any point therefore leaves whole slices or nothing; the next run
rewrites nothing twice and skips nothing. Pruning never passes the mark of the tier folded from it, so a
result is deleted only after it has been counted in a bucket.

Periods are UTC hours and UTC days. Every function does a bounded amount of work and returns, so the monitor
can interleave folds with its checks on its single database thread.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Min, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from machines.models import Machine, MachineEvent

from .models import DailyBucket, FoldMark, HourlyBucket, PingResult

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# An hour is folded once no check of it can still be written: a batch records its results within its lease
# (count × timeout + a margin, well under a minute at the defaults).
SETTLE = timedelta(minutes=10)
# Machines per transaction: each fold statement stays around a tenth of a second at 60 raw rows per machine,
# which is how long the monitor's check writes may wait behind it on its database thread.
SLICE = 1000
PRUNE_BATCH = 5000


@dataclass
class Tier:
    name: str
    model: type
    period: timedelta


HOURLY = Tier("hour", HourlyBucket, HOUR)
DAILY = Tier("day", DailyBucket, DAY)


def floor(moment: datetime, period: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (moment - epoch) // period * period


def mark(tier: Tier) -> datetime | None:
    """Every period of this tier that starts before the mark has been folded."""
    row = FoldMark.objects.filter(tier=tier.name).first()
    return row.until if row else None


def _set_mark(tier: Tier, until: datetime) -> None:
    # Only forward: a monitor that folded a period late must not send the mark back behind another's work.
    if not FoldMark.objects.filter(tier=tier.name, until__lt=until).update(until=until):
        FoldMark.objects.get_or_create(tier=tier.name, defaults={"until": until})


# -- folding ------------------------------------------------------------------------------------------------


def next_fold(tier: Tier, now: datetime | None = None) -> datetime | None:
    """The start of the next period of `tier` ready to fold, or None when it is up to date."""
    now = now or timezone.now()
    start = mark(tier)
    if start is None:
        start = _first_period(tier)
        if start is None:
            return None
    ready_until = floor(now - SETTLE, HOUR) if tier is HOURLY else mark(HOURLY)
    if ready_until is None or start + tier.period > ready_until:
        return None
    return start


def _first_period(tier: Tier) -> datetime | None:
    if tier is HOURLY:
        first = PingResult.objects.aggregate(first=Min("checked_at"))["first"]
    else:
        first = HourlyBucket.objects.aggregate(first=Min("start"))["first"]
    return floor(first, tier.period) if first else None


def fold_period(tier: Tier, start: datetime, after_machine: int = 0) -> int | None:
    """Fold one slice of machines (ids above `after_machine`) of the period starting at `start`.

    Returns the last machine id of the slice, to continue from, or None once the period is complete, at which
    point the tier's mark has moved past it.
    """
    end = start + tier.period
    with transaction.atomic():
        # Slices of the inventory, not of the period's rows: finding the machines in 600,000 rows would cost
        # more than folding them. A deleted machine's rows went with it.
        ids = list(Machine.objects.filter(pk__gt=after_machine).order_by("pk").values_list("pk", flat=True)[:SLICE])
        if ids:
            rows = _aggregate(tier, start, end, ids)
            tier.model.objects.bulk_create(rows, ignore_conflicts=True)
        if len(ids) < SLICE:
            _set_mark(tier, end)
            return None
    return ids[-1]


def fold_all(tier: Tier, now: datetime | None = None) -> int:
    """Fold every period ready now; for tests and catch-up from the command line. Returns periods folded."""
    periods = 0
    while (start := next_fold(tier, now)) is not None:
        after = 0
        while (after := fold_period(tier, start, after)) is not None:
            pass
        periods += 1
    return periods


def _source_rows(tier: Tier, start: datetime, end: datetime):
    if tier is HOURLY:
        return PingResult.objects.filter(checked_at__gte=start, checked_at__lt=end)
    return HourlyBucket.objects.filter(start__gte=start, start__lt=end)


def _aggregate(tier: Tier, start: datetime, end: datetime, ids: list[int]) -> list:
    # A range, not IN (2,000 ids): the planner walks the (machine, checked_at) index instead of the table.
    source = _source_rows(tier, start, end).filter(machine_id__gte=ids[0], machine_id__lte=ids[-1]).values("machine_id")
    if tier is HOURLY:
        sums = source.annotate(
            n=Count("pk"), up=Count("pk", filter=Q(ok=True)), loss=Sum("loss"),
            low=Min("rtt_ms"), total=Sum("rtt_ms"), high=Max("rtt_ms"),
        )
        outages = unreachable_seconds(ids, start, end)
    else:
        sums = source.annotate(
            n=Sum("checks"), up=Sum("answered"), loss=Sum("loss_sum"),
            low=Min("rtt_min"), total=Sum("rtt_sum"), high=Max("rtt_max"), down=Sum("unreachable_seconds"),
        )
        outages = {}
    return [
        tier.model(
            machine_id=row["machine_id"], start=start, checks=row["n"], answered=row["up"], loss_sum=row["loss"] or 0.0,
            rtt_min=row["low"], rtt_sum=row["total"], rtt_max=row["high"],
            unreachable_seconds=row.get("down") or outages.get(row["machine_id"], 0),
        )
        for row in sums.order_by()
    ]


def unreachable_seconds(ids: list[int], start: datetime, end: datetime) -> dict[int, int]:
    """Seconds of [start, end) each machine spent unreachable, from the log's unreachable/recovered entries."""
    kinds = [MachineEvent.Kind.UNREACHABLE, MachineEvent.Kind.RECOVERED]
    last_before = (
        MachineEvent.objects.filter(machine=OuterRef("pk"), kind__in=kinds, created_at__lt=start)
        .order_by("-created_at", "-pk").values("kind")[:1]
    )
    # Only machines with any outage entry before the period can be down at its start; few ever are.
    candidates = (
        MachineEvent.objects.filter(machine_id__gte=ids[0], machine_id__lte=ids[-1], kind__in=kinds,
                                    created_at__lt=start)
        .values("machine_id").distinct()
    )
    down_at_start = (
        Machine.objects.filter(pk__in=Subquery(candidates)).annotate(last=Subquery(last_before))
        .filter(last=MachineEvent.Kind.UNREACHABLE).values_list("pk", flat=True)
    )
    down_since: dict[int, datetime] = dict.fromkeys(down_at_start, start)
    seconds: dict[int, float] = defaultdict(float)
    during = (
        MachineEvent.objects.filter(machine_id__gte=ids[0], machine_id__lte=ids[-1], kind__in=kinds,
                                    created_at__gte=start, created_at__lt=end)
        .order_by("created_at", "pk").values_list("machine_id", "kind", "created_at")
    )
    for machine_id, kind, at in during:
        if kind == MachineEvent.Kind.UNREACHABLE:
            down_since.setdefault(machine_id, at)
        elif machine_id in down_since:
            seconds[machine_id] += (at - down_since.pop(machine_id)).total_seconds()
    for machine_id, since in down_since.items():
        seconds[machine_id] += (end - since).total_seconds()
    return {machine_id: round(value) for machine_id, value in seconds.items()}


# -- pruning ------------------------------------------------------------------------------------------------


def raw_cutoff(now: datetime | None = None) -> datetime | None:
    """Raw results before this may go: past retention and already folded into hours."""
    folded = mark(HOURLY)
    if folded is None:
        return None
    return min((now or timezone.now()) - timedelta(hours=settings.RAW_RETENTION_HOURS), folded)


def prune_raw(now: datetime | None = None) -> int:
    """Delete one batch of raw results before the cutoff; returns how many went."""
    cutoff = raw_cutoff(now)
    if cutoff is None:
        return 0
    ids = list(PingResult.objects.filter(checked_at__lt=cutoff).values_list("pk", flat=True)[:PRUNE_BATCH])
    return PingResult.objects.filter(pk__in=ids).delete()[0] if ids else 0


def prune_buckets(tier: Tier, now: datetime | None = None) -> int:
    """Delete the oldest period of `tier` past its retention (and, for hours, folded into days)."""
    now = now or timezone.now()
    if tier is HOURLY:
        cutoff = now - timedelta(days=settings.HOURLY_RETENTION_DAYS)
        folded = mark(DAILY)
        if folded is None:
            return 0
        cutoff = min(cutoff, folded)
    else:
        cutoff = now - timedelta(days=settings.DAILY_RETENTION_DAYS)
    oldest = tier.model.objects.filter(start__lt=cutoff).aggregate(oldest=Min("start"))["oldest"]
    if oldest is None:
        return 0
    return tier.model.objects.filter(start=oldest).delete()[0]


# -- one pass, as the monitor runs it -----------------------------------------------------------------------


class Folder:
    """Remembers where a fold stopped between calls, so each call is one short transaction. Losing that
    memory (a restart) only means a slice is read again: its buckets exist, and the insert skips them."""

    def __init__(self):
        self.position: dict[str, tuple[datetime, int]] = {}

    def step(self, now: datetime | None = None) -> str | None:
        """Do one unit of history work; returns what it did, or None when there is nothing to do."""
        for tier in (HOURLY, DAILY):
            start = next_fold(tier, now)
            if start is None:
                continue
            held, after = self.position.pop(tier.name, (None, 0))
            after = fold_period(tier, start, after if held == start else 0)
            if after is None:
                return f"folded {tier.name} {start:%Y-%m-%d %H:%M}"
            self.position[tier.name] = (start, after)
            return f"folding {tier.name} {start:%Y-%m-%d %H:%M}"
        if prune_raw(now):
            return "pruned raw"
        for tier in (HOURLY, DAILY):
            if prune_buckets(tier, now):
                return f"pruned {tier.name}"
        return None
