"""Sweep: one check round over N targets inside a network namespace, against `fping -i0` on the same targets.

Inside a fresh namespace with only ``lo`` up, every address of 127.0.0.0/8 answers pings, so N targets
127.10.x.y need no set-up and no packet leaves the namespace. A child process inside the namespace (this
module run as ``python -m lab.benchmarks.sweep child``) alternates, repetition by repetition:

* our check round: :meth:`monitoring.icmp.Pinger.ping_batch` (count 1, timeout 1 s) on a Pinger opened
  before the clock starts, in the mode the monitor would pick (:func:`probe_privileges`), and closed after
  it, so the reference's replies never queue up on our socket; wall time and CPU time of the process
  (``time.process_time``) around the batch, as in the monitor, where the Pinger lives for the process;
* the reference: ``fping -c1 -t1000 -i0 -q`` with the targets on stdin; wall time around the process and
  its CPU time from ``getrusage(RUSAGE_CHILDREN)``. ``-q`` only leaves out the per-reply lines (less work
  for fping, so the comparison is, if anything, tilted in fping's favour).

Then an nft set in the namespace silently drops echo requests to every tenth target and both run again.

The daemon part starts the real ``manage.py monitor`` inside a namespace against PostgreSQL through its
Unix socket, with N machines, and measures from the database the checks per second it sustains, how late
due checks start (due lag), and the monitor's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from .common import ROOT, Row, addresses, child_env, median, unix_socket_database_url, vm_kib

TIMEOUT = 1.0
DEAD_EVERY = 10
FPING = ["fping", "-c1", "-t1000", "-i0", "-q"]
_FPING_LINE = re.compile(r"^(\S+)\s*: xmt/rcv/%loss = (\d+)/(\d+)/")


# ---------------------------------------------------------------------------------------------- child


def parse_fping(stderr: str) -> tuple[int, int]:
    """(targets alive, targets reported) from the summary lines `fping -c -q` prints on stderr."""
    alive = reported = 0
    for line in stderr.splitlines():
        match = _FPING_LINE.match(line)
        if match:
            reported += 1
            alive += int(match.group(3)) > 0
    return alive, reported


def run_fping(targets: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(FPING, input="\n".join(targets), capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    alive, reported = parse_fping(proc.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "alive": alive, "reported": reported, "exit": proc.returncode}


async def run_ours(targets: list[str], mode) -> dict:
    from monitoring.icmp import Pinger

    with Pinger(mode) as pinger:
        cpu, started = time.process_time(), time.perf_counter()
        results = await pinger.ping_batch(targets, 1, TIMEOUT)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    failures = Counter(result.failure for result in results.values() if not result.ok)
    alive = sum(1 for result in results.values() if result.ok)
    return {"wall": wall, "cpu": cpu, "alive": alive, "failures": dict(failures), "mode": pinger.mode.value}


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.benchmarks.sweep child")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    from monitoring.icmp import probe_privileges

    targets = sys.stdin.read().split()
    mode = probe_privileges()
    report = {"mode": mode.value, "ours": [], "fping": []}
    for _rep in range(min(args.reps, 50)):
        report["ours"].append(asyncio.run(run_ours(targets, mode)))
        report["fping"].append(run_fping(targets))
    json.dump(report, sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------- one round


def _round(ns, targets: list[str], reps: int) -> dict:
    proc = ns.run(
        sys.executable, "-m", "lab.benchmarks.sweep", "child", "--reps", str(reps),
        input="\n".join(targets), cwd=ROOT, timeout=60 + reps * 10, env=child_env(),
    )
    return json.loads(proc.stdout)


def _drop(ns, dead: list[str]) -> None:
    ns.drop_echo_requests(dead, table="vxmbench")


def _summary(report: dict) -> dict:
    ours, ref = report["ours"], report["fping"]
    return {
        "mode": report["mode"],
        "wall": median(r["wall"] for r in ours),
        "cpu": median(r["cpu"] for r in ours),
        "alive": min(r["alive"] for r in ours),
        "alive_max": max(r["alive"] for r in ours),
        "failures": sorted({kind for r in ours for kind in r["failures"]}),
        "ref_wall": median(r["wall"] for r in ref),
        "ref_cpu": median(r["cpu"] for r in ref),
        "ref_alive": min(r["alive"] for r in ref),
        "walls": [round(r["wall"], 3) for r in ours],
        "ref_walls": [round(r["wall"], 3) for r in ref],
    }


def run_rounds(ctx, n: int, reps: int) -> list[Row]:
    from lab.netns import NetNS

    targets = addresses(n)
    dead = targets[::DEAD_EVERY]
    with NetNS() as ns:
        alive = _summary(_round(ns, targets, reps))
        _drop(ns, dead)
        partly = _summary(_round(ns, targets, reps))
    ctx.log(f"sweep N={n} all answering: {alive}")
    ctx.log(f"sweep N={n} {len(dead)} dropping: {partly}")
    ctx.raw[f"sweep_{n}"] = {"alive": alive, "partly": partly}
    area, big = "Sweep", n >= 10_000
    reps_note = f"median of {reps}; {alive['mode']} ICMP socket"
    ratio = alive["wall"] / alive["ref_wall"]
    ratio_dead = partly["wall"] / partly["ref_wall"]
    expected_alive = n - len(dead)
    return [
        Row(area, "one round, all answering: wall", round(alive["wall"] * 1000, 1), "ms", n,
            reference=f"fping -i0: {alive['ref_wall'] * 1000:.1f} ms", ratio=round(ratio, 2),
            target="ratio ≤ 1.0" if big else "", met=(ratio <= 1.0) if big else None,
            note=f"{reps_note}; ours {alive['walls']} s, fping {alive['ref_walls']} s"),
        Row(area, "one round, all answering: CPU", round(alive["cpu"] * 1000, 1), "ms", n,
            reference=f"fping -i0: {alive['ref_cpu'] * 1000:.1f} ms", ratio=round(alive["cpu"] / alive["ref_cpu"], 2),
            target="< 500 ms" if big else "", met=(alive["cpu"] < 0.5) if big else None, note=reps_note),
        Row(area, "one round, all answering: targets found alive", alive["alive"], "targets", n,
            reference=f"fping -i0: {alive['ref_alive']}", target="all (none missed)" if big else "",
            met=(alive["alive"] == n) if big else None,
            note="lowest of the repetitions" + ("" if alive["alive"] == alive["alive_max"] else
                                                f" (highest {alive['alive_max']})")),
        Row(area, "one round, 10% silently dropping: wall", round(partly["wall"] * 1000, 1), "ms", n,
            reference=f"fping -i0: {partly['ref_wall'] * 1000:.1f} ms", ratio=round(ratio_dead, 2),
            target=f"≤ {(TIMEOUT + 0.3) * 1000:.0f} ms (timeout + 0.3 s)" if big else "",
            met=(partly["wall"] <= TIMEOUT + 0.3) if big else None,
            note=f"{reps_note}; ours {partly['walls']} s, fping {partly['ref_walls']} s"),
        Row(area, "one round, 10% silently dropping: targets found alive", partly["alive"], "targets", n,
            reference=f"fping -i0: {partly['ref_alive']}", target=f"exactly {expected_alive}",
            met=partly["alive"] == expected_alive == partly["alive_max"],
            note=f"failures reported: {', '.join(partly['failures']) or 'none'}"),
    ]


# ---------------------------------------------------------------------------------------------- the daemon


def _prepare_machines(n: int, spread: float, interval: int) -> None:
    """Every machine answering and due within `spread` seconds from now, nothing claimed."""
    from django.db import connection

    from machines.models import Machine

    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Machine._meta.db_table} SET status = 'active', consecutive_failures = 0, "  # noqa: S608
            "check_interval = %s, claim_token = '', claimed_until = NULL, last_checked_at = NULL, "
            "next_check_at = now() + make_interval(secs => %s * random())",
            [interval, spread],
        )
    assert Machine.objects.count() == n


def _lag() -> float:
    """The age of the oldest due check no monitor has claimed, in seconds (0 when none is waiting).

    One walk of the next_check_at index from its start: cheap even at 100,000 machines, so sampling it
    four times a second takes little from the monitor under test."""
    from django.db import connection

    from machines.models import Machine

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(next_check_at)), 0) FROM {Machine._meta.db_table} "  # noqa: S608
            "WHERE next_check_at <= now() AND (claimed_until IS NULL OR claimed_until < now())"
        )
        lag = cursor.fetchone()[0]
    return max(0.0, float(lag))


def _start_monitor(ns, log_path: Path, **overrides: str):
    """`manage.py monitor` in `ns`; with BENCH_MONITOR_PROFILE=1 (or =time) in the bench's environment, under
    lab.benchmarks.monitor_profile (its database calls profiled and timed, written beside the log)."""
    settings = {
        "DATABASE_URL": unix_socket_database_url(),
        "REDIS_URL": None,  # no dashboards in this test: pushes go to the in-memory layer
        "VXLANMGR_LOG_LEVEL": "WARNING",
        **overrides,
    }
    env = child_env(**settings)
    log = open(log_path, "ab")
    command = ["manage.py", "monitor"]
    if os.environ.get("BENCH_MONITOR_PROFILE") in {"1", "time"}:
        out = log_path.with_name(f"{log_path.stem}-{ns.name}-{time.time():.0f}.prof")
        command = ["-m", "lab.benchmarks.monitor_profile", str(out)]
    proc = ns.popen(sys.executable, *command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _stop(proc, log) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log.close()


def _watch(proc, log_path: Path, since, seconds: float) -> tuple[float, float]:
    """Sample the database every 0.25 s for `seconds`: (checks per second, max due lag in seconds)."""
    lag_max = 0.0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(0.25)
        if proc.poll() is not None:
            raise RuntimeError(f"the monitor exited with {proc.returncode}; see {log_path}")
        lag_max = max(lag_max, _lag())
    return _rate(since, seconds), lag_max


def _rate(since, seconds: float) -> float:
    """Checks per second since `since`, from the batches' own commit times (every row of a batch has the
    same checked_at), first to last batch in the window, so a window holding a few large batches is not
    rounded to whole batches."""
    from django.db.models import Count

    from monitoring.models import PingResult

    batches = list(
        PingResult.objects.filter(checked_at__gte=since).values_list("checked_at").annotate(n=Count("id"))
        .order_by("checked_at")
    )
    if len(batches) >= 2:
        span = (batches[-1][0] - batches[0][0]).total_seconds()
        return sum(n for _at, n in batches[1:]) / span if span > 0 else float("nan")
    return sum(n for _at, n in batches) / seconds  # at most one batch: an upper bound


def run_daemon(ctx, n: int, window: float) -> list[Row]:
    """The real monitor in a namespace: (a) all N machines always due, (b) the default schedule; RSS of both."""
    from django.utils import timezone

    from lab.netns import NetNS

    area = "Sweep (daemon)"
    log_path = ctx.log_dir / f"monitor-{n}.log"
    warmup = 3.0
    # (a) All N due at once and due again 1 s after each check: the most checks per second it can do.
    _prepare_machines(n, 0.0, 1)
    with NetNS() as ns:
        proc, log = _start_monitor(ns, log_path, VXLANMGR_CHECK_INTERVAL="1")
        try:
            since = timezone.now()
            _watch(proc, log_path, since, warmup)  # start-up: Django, ICMP sockets, the first claims
            rate, _lag = _watch(proc, log_path, since, window)
            rss_a = vm_kib(proc.pid, "VmHWM")
        finally:
            _stop(proc, log)
    ctx.log(f"daemon N={n}: every machine always due: {rate:.0f} checks/s")
    # (b) The default schedule in its steady state: every machine once a minute, due times spread evenly.
    demand = n / 60
    _prepare_machines(n, 60.0, 60)
    with NetNS() as ns:
        proc, log = _start_monitor(ns, log_path)
        try:
            since = timezone.now()
            _watch(proc, log_path, since, warmup)
            since = timezone.now()
            achieved, lag_max = _watch(proc, log_path, since, window)
            rss = max(rss_a, vm_kib(proc.pid, "VmHWM"))
        finally:
            _stop(proc, log)
    ctx.log(f"daemon N={n}: default schedule {demand:.0f}/s -> {achieved:.0f}/s, max due lag {lag_max:.2f} s, "
            f"RSS {rss} KiB")
    ctx.raw[f"daemon_{n}"] = {"rate": rate, "demand": demand, "achieved": achieved, "lag": lag_max, "rss_kib": rss}
    big = n >= 10_000
    # Later parts reuse the machines: leave them unclaimed and not due for an hour.
    from machines.models import Machine

    Machine.objects.update(claim_token="", claimed_until=None, next_check_at=timezone.now() + timedelta(hours=1))
    return [
        Row(area, "checks/s sustained, every machine always due", round(rate), "checks/s", n,
            reference=f"default schedule needs {demand:.0f}/s", ratio=round(rate / demand, 2),
            note=f"2 echo requests per check (default); PostgreSQL; {window:g} s after a {warmup:g} s warm-up"),
        Row(area, "due lag at the default schedule (60 s)", round(lag_max, 2), "s (max)", n,
            reference=f"{demand:.0f} checks/s due, {achieved:.0f}/s done",
            note=f"oldest due-but-unclaimed check, sampled every 0.25 s for {window:g} s"),
        Row(area, "monitor RSS (VmHWM)", round(rss / 1024, 1), "MB", n, target="< 150 MB" if big else "",
            met=(rss / 1024 < 150) if big else None, note="peak over both runs"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m lab.benchmarks.sweep child [--reps N] < targets")
