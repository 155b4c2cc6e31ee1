"""Storage: database bytes per machine per day of ping results at the default settings.

The monitor writes one PingResult row per check; at the default interval of 60 s that is 1,440 rows per
machine per day, kept for VXLANMGR_PING_RETENTION_DAYS (7). This inserts a day of results for a sample
of machines in the order the monitor writes them (minute by minute, one row per machine, in batches), with
the values a healthy check records, then reads the table's total size (heap, indexes, TOAST) from
PostgreSQL after VACUUM ANALYZE.
"""

from __future__ import annotations

from .common import Row

SAMPLE_MACHINES = 100


def run(ctx, sample: int = SAMPLE_MACHINES) -> list[Row]:
    from django.conf import settings
    from django.db import connection

    from machines.models import Machine
    from monitoring.models import PingResult

    table = PingResult._meta.db_table
    ids = list(Machine.objects.order_by("pk").values_list("pk", flat=True)[:sample])
    if len(ids) < sample:
        raise RuntimeError(f"storage needs {sample} machines, found {len(ids)}")
    rows_per_day = 24 * 60 * 60 // settings.CHECK_INTERVAL
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}")
        # One hour per statement, minute by minute: the insertion order (and so the index layout) of the monitor.
        for hour in range(24):
            cursor.execute(
                f"INSERT INTO {table} (machine_id, checked_at, ok, rtt_ms, loss, failure) "  # noqa: S608
                "SELECT m, now() - interval '1 day' + make_interval(secs => minute * %s), true, "
                "0.02 + random() * 0.5, 0.0, '' "
                "FROM generate_series(%s, %s) AS minute, unnest(%s::bigint[]) AS m ORDER BY minute, m",
                [settings.CHECK_INTERVAL, hour * rows_per_day // 24, (hour + 1) * rows_per_day // 24 - 1, ids],
            )
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {table}")
        sizes = "SELECT pg_total_relation_size(%s), pg_relation_size(%s), pg_indexes_size(%s), "
        cursor.execute(sizes + f"(SELECT count(*) FROM {table})", [table, table, table])  # noqa: S608
        total, heap, indexes, count = cursor.fetchone()
        cursor.execute(f"TRUNCATE {table}")
    per_machine_day = total / sample
    retention = settings.PING_RETENTION_DAYS
    ctx.log(f"storage: {count} rows, {total} bytes total ({heap} heap, {indexes} indexes)")
    ctx.raw["storage"] = {"rows": count, "total": total, "heap": heap, "indexes": indexes}
    area = "Storage"
    return [
        Row(area, "ping results per machine per day", round(per_machine_day / 1024, 1), "KiB",
            reference=f"{rows_per_day:,} rows (check every {settings.CHECK_INTERVAL} s)",
            note=f"{total / count:.0f} bytes per row: heap {heap / count:.0f}, indexes {indexes / count:.0f}; "
                 f"{count:,} rows of {sample} machines measured"),
        Row(area, f"kept at the default retention ({retention} days), per machine", round(
            per_machine_day * retention / 1024 / 1024, 2), "MiB",
            note=f"× 10,000 machines ≈ {per_machine_day * retention * 10_000 / 1024 ** 3:.1f} GiB; "
                 f"{per_machine_day * 10_000 / 1024 ** 3:.2f} GiB written per day"),
    ]
