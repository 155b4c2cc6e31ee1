"""The monitor at scale: one monitor and 100,000 machines, and two monitors sharing 10,000 machines.

Both start the real ``manage.py monitor`` in network namespaces of their own (as :func:`sweep.run_daemon`
does), on PostgreSQL through its Unix socket. The machines are written by one ``INSERT … SELECT
generate_series`` (a registration storm of 100,000 would take the run's whole budget), on 127.10.0.0 and up,
which answer inside a namespace that has only ``lo``.

* **One monitor, 100,000 machines**: (a) every machine due at once and due again 1 s after each check, the
  most checks per second it can do; (b) the default schedule's steady state: every machine due once a
  minute, due times spread evenly over the minute (the order shuffled against the ids, as a fleet that
  registered over time has it), set once the monitor is up, so no start-up backlog counts. Checks per
  second over one whole interval after a warm-up, the worst due lag sampled every 0.25 s, and the
  monitor's VmHWM.
* **Two monitors, 10,000 machines**, both unscoped, in two namespaces: the same two runs. Every ping result
  of the interval-long window is counted per machine: a machine with two results in one interval was
  checked twice in a round, which the row claims must never allow.
"""

from __future__ import annotations

import time
from datetime import timedelta

from .common import Row, wait_for
from .sweep import _lag, _rate, _start_monitor, _stop

SCALE_TARGET_RSS_MB = 400
LAG_TARGET = 2.0
# Due times start this far after the UPDATE that spreads them, so the statement's own time is no lag.
HEAD_START = 2.0
PRIME = 1_000_003  # > any N here and prime, so (id * PRIME) % N is a permutation of 0..N-1


def address_sql(i: str) -> str:
    """127.10.0.0 and up for index `i` (0-based), past 127.10.255.255 into 127.11: 65,536 per /16."""
    return f"('127.' || (10 + {i} / 65536) || '.' || mod({i} / 256, 256) || '.' || mod({i}, 256))::inet"


def seed(n: int) -> None:
    """Empty the inventory and write N active machines in one statement, none due for an hour."""
    from django.db import connection

    from machines.models import Machine

    from .common import reset_inventory

    reset_inventory()
    hexbyte = "lpad(to_hex(({i} >> {shift}) & 255), 2, '0')"
    mac = " || ':' || ".join(hexbyte.format(i="i", shift=shift) for shift in (16, 8, 0))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Machine._meta.db_table} (hostname, ip_address, mac_address, vni, extra_data, status, "  # noqa: S608
            "registered_at, last_registered_at, updated_at, last_seen_at, consecutive_failures, check_interval, "
            "next_check_at, last_checked_at, last_rtt_ms, last_failure_kind, claim_token) "
            f"SELECT 'bench-' || lpad(i::text, 6, '0') || '.overlay.example', {address_sql('i')}, "
            f"'02:be:00:' || {mac}, 1000 + mod(i, 8), "
            "jsonb_build_object('rack', 'r' || lpad(mod(i, 40)::text, 2, '0')), "
            "'active', now() - interval '3 days', now() - interval '5 minutes', now(), now(), 0, 60, "
            "now() + interval '1 hour', now(), 0.05, '', '' FROM generate_series(0, %s - 1) AS i",
            [n],
        )
        cursor.execute(f"VACUUM ANALYZE {Machine._meta.db_table}")
    assert Machine.objects.count() == n


def schedule(n: int, spread: float, interval: int) -> None:
    """Every machine unclaimed, healthy, and due within `spread` seconds from HEAD_START on, evenly spaced."""
    from django.db import connection

    from machines.models import Machine

    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Machine._meta.db_table} SET status = 'active', consecutive_failures = 0, "  # noqa: S608
            "check_interval = %s, claim_token = '', claimed_until = NULL, unreachable_since = NULL, "
            "next_check_at = now() + make_interval(secs => %s + %s * ((id::bigint * %s) %% %s) / %s::float)",
            [interval, HEAD_START, spread, PRIME, n, n],
        )


def _monitors_up(count: int, since) -> bool:
    from monitoring.models import MonitorHeartbeat

    return MonitorHeartbeat.objects.filter(started_at__gte=since).count() >= count


def _start(namespaces, log_path, since, **overrides):
    """One monitor per namespace; returns [(proc, log)] once each has written its first heartbeat."""
    from monitoring.models import MonitorHeartbeat

    MonitorHeartbeat.objects.all().delete()
    started = [_start_monitor(ns, log_path, **overrides) for ns in namespaces]

    def up() -> bool:
        for proc, _log in started:
            if proc.poll() is not None:
                raise RuntimeError(f"a monitor exited with {proc.returncode}; see {log_path}")
        return _monitors_up(len(started), since)

    try:
        wait_for(up, 60, 0.2, "the monitors' first heartbeats")
    except BaseException:
        for proc, log in started:
            _stop(proc, log)
        raise
    return started


def _watch_all(started, log_path, since, seconds: float) -> tuple[float, float]:
    """Every monitor must stay up; sample the due lag every 0.25 s: (checks per second of all, max due lag)."""
    lag_max = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.25)
        for proc, _log in started:
            if proc.poll() is not None:
                raise RuntimeError(f"a monitor exited with {proc.returncode}; see {log_path}")
        lag_max = max(lag_max, _lag())
    return _rate(since, seconds), lag_max


def _park() -> None:
    """Nothing due and nothing claimed: between runs, and for the parts after this one."""
    from django.utils import timezone

    from machines.models import Machine

    Machine.objects.update(claim_token="", claimed_until=None, next_check_at=timezone.now() + timedelta(hours=1))


def _peak_rss_kib(started) -> int:
    from .common import vm_kib

    return max(vm_kib(proc.pid, "VmHWM") for proc, _log in started)


def _checks_per_machine(start, end) -> dict:
    """Per machine, its ping results in [start, end): how many machines had none, one, more than one."""
    from django.db import connection

    from machines.models import Machine
    from monitoring.models import PingResult

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE c = 0), count(*) FILTER (WHERE c = 1), "  # noqa: S608
            "count(*) FILTER (WHERE c > 1), COALESCE(max(c), 0) FROM (SELECT m.id, count(p.id) AS c "
            f"FROM {Machine._meta.db_table} m LEFT JOIN {PingResult._meta.db_table} p ON p.machine_id = m.id "
            "AND p.checked_at >= %s AND p.checked_at < %s GROUP BY m.id) AS per_machine",
            [start, end],
        )
        none, once, twice, most = cursor.fetchone()
    return {"none": none, "once": once, "more": twice, "most": most}


def _closest_checks(since) -> float | None:
    """The shortest time between two consecutive checks of one machine since `since`, in seconds."""
    from django.db import connection

    from monitoring.models import PingResult

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(gap) FROM (SELECT EXTRACT(EPOCH FROM checked_at - lag(checked_at) OVER "  # noqa: S608
            f"(PARTITION BY machine_id ORDER BY checked_at)) AS gap FROM {PingResult._meta.db_table} "
            "WHERE checked_at >= %s) AS gaps",
            [since],
        )
        gap = cursor.fetchone()[0]
    return None if gap is None else float(gap)


def _run(ctx, n: int, monitors: int, log_name: str, window: float, warmup: float) -> dict:
    """(a) every machine always due, then (b) the default schedule for one interval, with `monitors`
    monitors; the raw figures."""
    from django.utils import timezone

    from lab.netns import NetNS

    log_path = ctx.log_dir / log_name
    figures: dict = {"n": n, "monitors": monitors}
    # (a) the ceiling: all due now, due again 1 s after each check.
    namespaces = [NetNS().create() for _ in range(monitors)]
    try:
        since = timezone.now()
        started = _start(namespaces, log_path, since, VXLANMGR_CHECK_INTERVAL="1")
        try:
            schedule(n, 0.0, 1)
            _watch_all(started, log_path, timezone.now(), 3.0)
            since = timezone.now()
            rate, _lag_a = _watch_all(started, log_path, since, window)
            figures["rss_kib"] = _peak_rss_kib(started)
        finally:
            for proc, log in started:
                _stop(proc, log)
        figures["rate"] = rate
        figures["rate_gap"] = _closest_checks(since)
        _park()
        ctx.log(f"{monitors} monitor(s), N={n}: every machine always due: {rate:.0f} checks/s, closest two checks "
                f"of one machine {figures['rate_gap']} s apart")
        # (b) the default schedule, set once the monitors are up.
        interval = 60
        since = timezone.now()
        started = _start(namespaces, log_path, since)
        try:
            schedule(n, float(interval), interval)
            time.sleep(HEAD_START)
            _watch_all(started, log_path, timezone.now(), warmup)
            window_start = timezone.now()
            achieved, lag = _watch_all(started, log_path, window_start, float(interval))
            # Exactly one interval: a machine checked on schedule has one result in it, never two.
            window_end = window_start + timedelta(seconds=interval)
            figures["rss_kib"] = max(figures["rss_kib"], _peak_rss_kib(started))
        finally:
            for proc, log in started:
                _stop(proc, log)
    finally:
        for ns in namespaces:
            ns.destroy()
        _park()
    figures.update(demand=n / interval, achieved=achieved, lag=lag, interval=interval,
                   round=_checks_per_machine(window_start, window_end), gap=_closest_checks(since),
                   window=(window_end - window_start).total_seconds())
    ctx.log(f"{monitors} monitor(s), N={n}: default schedule {figures['demand']:.0f}/s -> {achieved:.0f}/s, "
            f"max due lag {lag:.2f} s, RSS {figures['rss_kib']} KiB, per machine in one interval {figures['round']}, "
            f"closest two checks of one machine {figures['gap']} s apart")
    return figures


def run_scale(ctx, n: int, window: float = 12.0) -> list[Row]:
    """One monitor keeps N (100,000) machines on the default schedule: rows with the issue's targets."""
    from .report import load_average

    load = load_average().split()[0]
    seed(n)
    f = _run(ctx, n, 1, f"monitor-scale-{n}.log", window, warmup=5.0)
    f["load"] = f"{load} / {load_average().split()[0]}"
    ctx.raw[f"daemon_scale_{n}"] = f
    area, demand = "Monitor at scale", f["demand"]
    checked = f["round"]["once"] + f["round"]["more"]
    load_note = f"load average (1 min) before / after: {f['load']}"
    return [
        Row(area, "one monitor: checks/s, every machine always due", round(f["rate"]), "checks/s", n,
            reference=f"default schedule needs {demand:,.0f}/s", ratio=round(f["rate"] / demand, 2),
            target=f"≥ {demand:,.0f} checks/s", met=f["rate"] >= demand,
            note=f"the ceiling; {window:g} s after a 3 s warm-up; {load_note}"),
        Row(area, "one monitor: checks/s sustained on the default schedule", round(f["achieved"]), "checks/s", n,
            reference=f"{demand:,.0f} checks/s due", ratio=round(f["achieved"] / demand, 2),
            target=f"≥ {0.99 * demand:,.0f} checks/s (99 % of those due)", met=f["achieved"] >= 0.99 * demand,
            note=f"one interval ({f['window']:.0f} s); {checked:,} of {n:,} machines checked in it; the schedule "
                 "sets the pace, the ceiling above the margin"),
        Row(area, "one monitor: due lag on the default schedule", round(f["lag"], 2), "s (max)", n,
            target=f"< {LAG_TARGET:g} s", met=f["lag"] < LAG_TARGET,
            note="oldest due-but-unclaimed check, sampled every 0.25 s over the interval"),
        Row(area, "one monitor: RSS (VmHWM)", round(f["rss_kib"] / 1024, 1), "MB", n,
            target=f"< {SCALE_TARGET_RSS_MB} MB", met=f["rss_kib"] / 1024 < SCALE_TARGET_RSS_MB,
            note="peak over both runs"),
    ]


def run_shared(ctx, n: int, window: float = 12.0) -> list[Row]:
    """Two unscoped monitors share N (10,000) machines: throughput, due lag, and no machine checked twice."""
    from .report import load_average

    load = load_average().split()[0]
    seed(n)
    f = _run(ctx, n, 2, f"monitor-shared-{n}.log", window, warmup=3.0)
    f["load"] = f"{load} / {load_average().split()[0]}"
    ctx.raw[f"daemon_shared_{n}"] = f
    area, demand, per_round = "Monitor at scale", f["demand"], f["round"]
    gap_a = f["rate_gap"]
    load_note = f"load average (1 min) before / after: {f['load']}"
    return [
        Row(area, "two monitors: checks/s together, every machine always due", round(f["rate"]), "checks/s", n,
            reference=f"default schedule needs {demand:,.0f}/s", ratio=round(f["rate"] / demand, 2),
            note=f"{window:g} s after a 3 s warm-up; {load_note}"),
        Row(area, "two monitors, always due: closest two checks of one machine", gap_a if gap_a is None
            else round(gap_a, 2), "s", n, target="≥ 1 s (the interval)", met=gap_a is not None and gap_a >= 1.0,
            note="two monitors checking one machine at once would show as checks well under 1 s apart"),
        Row(area, "two monitors: checks/s on the default schedule", round(f["achieved"]), "checks/s", n,
            reference=f"{demand:,.0f} checks/s due", ratio=round(f["achieved"] / demand, 2),
            target=f"≥ {0.99 * demand:,.0f} checks/s (99 % of those due)", met=f["achieved"] >= 0.99 * demand,
            note=f"one interval ({f['window']:.0f} s)"),
        Row(area, "two monitors: due lag on the default schedule", round(f["lag"], 2), "s (max)", n,
            target=f"< {LAG_TARGET:g} s", met=f["lag"] < LAG_TARGET,
            note="oldest due-but-unclaimed check, sampled every 0.25 s over the interval"),
        Row(area, "two monitors: machines checked twice in one round", per_round["more"], "machines", n,
            target="0", met=per_round["more"] == 0,
            note=f"ping results per machine in one {f['window']:.0f} s interval: {per_round['once']:,} once, "
                 f"{per_round['none']:,} not yet, {per_round['more']:,} more often; closest two checks of one "
                 f"machine {f['gap']:.1f} s apart" if f["gap"] is not None else "no machine checked twice"),
    ]
