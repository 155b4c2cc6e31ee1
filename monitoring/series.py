"""One machine's history as plain points, for charts and the history API.

Raw results and buckets come back as dicts with the same names whatever the storage calls them, ordered by
time, with aware datetimes (UTC from the database; format them in the viewer's zone). A bucket belongs to a
range when it starts inside it, so a range never counts one hour or day twice.
"""

from __future__ import annotations

from datetime import datetime

from machines.models import MachineEvent

from .models import DailyBucket, HourlyBucket, PingResult

BUCKETS = {"hour": HourlyBucket, "day": DailyBucket}
RESOLUTIONS = ("raw", *BUCKETS)
BUCKET_FIELDS = ("start", "checks", "answered", "loss_sum", "rtt_min", "rtt_sum", "rtt_max", "unreachable_seconds")

Outage = tuple[datetime, datetime | None]


def points(machine_id: int, resolution: str, since: datetime, until: datetime) -> list[dict]:
    """Checks of `machine_id` in [since, until): raw results, or hourly/daily buckets by their start."""
    if resolution == "raw":
        rows = PingResult.objects.filter(machine_id=machine_id, checked_at__gte=since, checked_at__lt=until)
        return [
            {"at": at, "ok": ok, "rtt_ms": rtt, "loss": loss, "failure": failure}
            for at, ok, rtt, loss, failure in rows.order_by("checked_at", "pk").values_list(
                "checked_at", "ok", "rtt_ms", "loss", "failure"
            )
        ]
    if resolution not in BUCKETS:
        raise ValueError(f"unknown resolution {resolution!r}, expected one of {RESOLUTIONS}")
    rows = BUCKETS[resolution].objects.filter(machine_id=machine_id, start__gte=since, start__lt=until)
    # Plain values, not model instances: a year of days or a month of hours is hundreds of rows per chart.
    return [_bucket_point(**row) for row in rows.order_by("start").values(*BUCKET_FIELDS)]


def _bucket_point(start, checks, answered, loss_sum, rtt_min, rtt_sum, rtt_max, unreachable_seconds) -> dict:
    # The same sums as Bucket.loss and Bucket.rtt_mean.
    return {
        "start": start,
        "checks": checks,
        "answered": answered,
        "loss": loss_sum / checks if checks else None,
        "rtt_min_ms": rtt_min,
        "rtt_mean_ms": rtt_sum / answered if answered and rtt_sum is not None else None,
        "rtt_max_ms": rtt_max,
        "unreachable_seconds": unreachable_seconds,
    }


def outages(machine_id: int, since: datetime, until: datetime) -> list[Outage]:
    """Outages of `machine_id` overlapping [since, until) from the failure log, as (start, end) pairs.

    One open at `since` starts at `since`; one still open at `until` ends with None (the caller decides
    whether that means "now" or "the end of the range").
    """
    kinds = [MachineEvent.Kind.UNREACHABLE, MachineEvent.Kind.RECOVERED]
    log = MachineEvent.objects.filter(machine_id=machine_id, kind__in=kinds)
    before = log.filter(created_at__lt=since).order_by("-created_at", "-pk").values_list("kind", flat=True).first()
    down_since = since if before == MachineEvent.Kind.UNREACHABLE else None
    spans: list[Outage] = []
    during = log.filter(created_at__gte=since, created_at__lt=until).order_by("created_at", "pk")
    for kind, at in during.values_list("kind", "created_at"):
        if kind == MachineEvent.Kind.UNREACHABLE:
            # A second "unreachable" without a recovery between (a restarted monitor) continues the outage.
            down_since = down_since or at
        elif down_since is not None:
            spans.append((down_since, at))
            down_since = None
    if down_since is not None:
        spans.append((down_since, None))
    return spans
