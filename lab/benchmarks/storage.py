"""Storage and folding: database bytes per machine in each history tier at steady state, and how long the
monitor's fold of one hour takes at the fleet size under test.

Steady state at the default settings: raw results for VXLANMGR_RAW_RETENTION_HOURS (one per check interval),
hourly buckets for VXLANMGR_HOURLY_RETENTION_DAYS, daily buckets for VXLANMGR_DAILY_RETENTION_DAYS, inserted
for a sample of machines in time order as the monitor and the folds write them; sizes are
`pg_total_relation_size` (heap, indexes, TOAST) after VACUUM ANALYZE.
"""

from __future__ import annotations

import time

from .common import Row

SAMPLE_MACHINES = 100
TARGET_MIB = 1.0


def run(ctx, sample: int = SAMPLE_MACHINES) -> list[Row]:
    from django.conf import settings

    from machines.models import Machine
    from monitoring.models import DailyBucket, HourlyBucket, PingResult

    ids = list(Machine.objects.order_by("pk").values_list("pk", flat=True)[:sample])
    if len(ids) < sample:
        raise RuntimeError(f"storage needs {sample} machines, found {len(ids)}")
    interval = settings.CHECK_INTERVAL
    raw_rows = settings.RAW_RETENTION_HOURS * 3600 // interval
    tiers = [
        ("raw results", PingResult, raw_rows, settings.RAW_RETENTION_HOURS / 24, f"{settings.RAW_RETENTION_HOURS} h"),
        ("hourly buckets", HourlyBucket, settings.HOURLY_RETENTION_DAYS * 24, settings.HOURLY_RETENTION_DAYS,
         f"{settings.HOURLY_RETENTION_DAYS} d"),
        ("daily buckets", DailyBucket, settings.DAILY_RETENTION_DAYS, settings.DAILY_RETENTION_DAYS,
         f"{settings.DAILY_RETENTION_DAYS} d"),
    ]
    _truncate(PingResult, HourlyBucket, DailyBucket)
    _fill_raw(PingResult, ids, raw_rows, interval)
    _fill_buckets(HourlyBucket, ids, settings.HOURLY_RETENTION_DAYS * 24, "1 hour", 3600 // interval)
    _fill_buckets(DailyBucket, ids, settings.DAILY_RETENTION_DAYS, "1 day", 86400 // interval)

    area, rows, total = "Storage", [], 0.0
    sizes = {}
    for name, model, per_machine, days, kept in tiers:
        size, count = _size(model)
        sizes[name] = {"bytes": size, "rows": count}
        per_machine_bytes = size / sample
        total += per_machine_bytes
        rows.append(Row(
            area, f"{name}, per machine per day", round(per_machine_bytes / days / 1024, 2), "KiB",
            reference=f"kept {kept}: {per_machine_bytes / 1024:.0f} KiB per machine",
            note=f"{per_machine:,} rows per machine, {size / count:.0f} bytes per row with indexes",
        ))
    ctx.raw["storage"] = sizes
    ctx.log(f"storage: {sizes}")
    mib = total / 1024 / 1024
    rows.append(Row(
        area, "all tiers at steady state, per machine", round(mib, 3), "MiB",
        target=f"≤ {TARGET_MIB:g} MiB", met=mib <= TARGET_MIB,
        note=f"× 10,000 machines ≈ {total * 10_000 / 1024 ** 3:.1f} GiB; {sample} machines measured",
    ))
    _truncate(PingResult, HourlyBucket, DailyBucket)
    rows += _fold_hour(ctx, PingResult, interval)
    _truncate(PingResult, HourlyBucket, DailyBucket)
    return rows


def _table(model) -> str:
    return model._meta.db_table


def _truncate(*models) -> None:
    from django.db import connection

    from monitoring.models import FoldMark

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(_table(m) for m in (*models, FoldMark)))


def _fill_raw(model, ids: list[int], count: int, interval: int) -> None:
    from django.db import connection

    per_statement = 3600 // interval
    with connection.cursor() as cursor:
        # An hour per statement, check by check: the insertion order (and so the index layout) of the monitor.
        for first in range(0, count, per_statement):
            cursor.execute(
                f"INSERT INTO {_table(model)} (machine_id, checked_at, ok, rtt_ms, loss, failure) "  # noqa: S608
                "SELECT m, now() - make_interval(secs => (%s - n) * %s), true, 0.02 + random() * 0.5, 0.0, '' "
                "FROM generate_series(%s, %s) AS n, unnest(%s::bigint[]) AS m ORDER BY n, m",
                [count, interval, first, min(first + per_statement, count) - 1, ids],
            )


def _fill_buckets(model, ids: list[int], count: int, period: str, checks: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(model)} (machine_id, start, checks, answered, loss_sum, rtt_min, rtt_sum, "  # noqa: S608
            "rtt_max, unreachable_seconds) "
            f"SELECT m, date_trunc('hour', now()) - (%s - n) * interval '{period}', %s, %s - (n %% 7 = 0)::int, "
            "(n %% 7 = 0)::int, 0.02 + random() * 0.1, %s * (0.1 + random() * 0.2), 0.3 + random(), 0 "
            "FROM generate_series(1, %s) AS n, unnest(%s::bigint[]) AS m ORDER BY n, m",
            [count, checks, checks, checks, count, ids],
        )


def _size(model) -> tuple[int, int]:
    from django.db import connection

    table = _table(model)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute(f"SELECT pg_total_relation_size(%s), (SELECT count(*) FROM {table})", [table])  # noqa: S608
        return cursor.fetchone()


def _fold_hour(ctx, model, interval: int) -> list[Row]:
    """One hour of checks for every machine, folded as the monitor does it: slice by slice."""
    from django.db import connection

    from machines.models import Machine
    from monitoring import history

    ids = list(Machine.objects.values_list("pk", flat=True))
    start = history.floor(history.floor(time_now(), history.HOUR) - 2 * history.HOUR, history.HOUR)
    per_hour = 3600 // interval
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(model)} (machine_id, checked_at, ok, rtt_ms, loss, failure) "  # noqa: S608
            "SELECT m, %s + make_interval(secs => n * %s), n %% 50 <> 0, 0.02 + random() * 0.5, 0.0, '' "
            "FROM generate_series(0, %s) AS n, unnest(%s::bigint[]) AS m ORDER BY n, m",
            [start, interval, per_hour - 1, ids],
        )
    slices, longest, began, after = 0, 0.0, time.perf_counter(), 0
    while True:
        t0 = time.perf_counter()
        after = history.fold_period(history.HOURLY, start, after)
        longest = max(longest, time.perf_counter() - t0)
        slices += 1
        if after is None:
            break
    took = time.perf_counter() - began
    ctx.log(f"fold: {len(ids)} machines, {slices} slices, {took:.2f} s, longest slice {longest * 1000:.0f} ms")
    return [Row(
        "Storage", "folding one hour of raw results", round(took, 2), "s", n=len(ids),
        reference=f"{len(ids) * per_hour:,} results, {slices} transactions of ≤ {history.SLICE:,} machines",
        target="< 60 s (an hour's work in a minute)", met=took < 60,
        note=f"longest transaction {longest * 1000:.0f} ms",
    )]


def time_now():
    from django.utils import timezone

    return timezone.now()
