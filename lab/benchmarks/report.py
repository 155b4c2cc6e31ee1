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

# Why a target can be missed: printed under an area's table when one of its targets is missed.
CAUSES = {
    "Sweep": (
        "**Sweep vs fping.** The pinger sends from one prebuilt packet per batch (sequence and checksum patched "
        "in place) and matches echo replies straight from their bytes, so its CPU per target is close to "
        "fping's C loop; both spend most of a round in the kernel. When other work competes for the cores the "
        "wall times of both stretch and the ratio moves with them (see the per-repetition times in the notes)."
    ),
    "Register": (
        "**Register.** One Daphne process serves the storm, on the same cores as PostgreSQL, Redis and the 50 "
        "clients. Its reference is a static file fetched by the same clients in the same run: what Daphne, "
        "Twisted and Django's request handling allow here before any registration work, which registration "
        "cannot exceed. What a registration adds to that is its own work, listed by the profile below; a "
        "production deployment scales with more server processes behind the proxy."
    ),
    "Dashboard": (
        "**Dashboard.** Almost all the server time is template rendering: the queries take a few ms at 10,000 "
        "machines, and the JSON list of 500 machines, the same queries serialised in Python, is the yardstick "
        "the page is held to. What the page costs beyond it is Django's per-node template cost for every "
        "machine on the page, which the server CPU per request shows."
    ),
    "Push": (
        "**Push.** Each socket's fragment goes through the server's one shared database thread: Channels' "
        "`AsyncConsumer.dispatch` hops there to close old connections before every message, and the consumer "
        "hops there again to render. Sockets showing the same page share one render, so the hops are what is "
        "left per socket: 100 thread hand-offs for 50 sockets, quick on an idle machine and slow when other "
        "work keeps the cores busy. Skipping them for a render another socket already made needs the consumer "
        "(monitoring/consumers.py) to look up the shared render before dispatching to the thread."
    ),
    "Alerts": (
        "**Alerts.** The worker sends a channel's pending alerts as soon as they outnumber "
        "`VXLANMGR_NOTIFY_GROUP_THRESHOLD` (`monitoring.alerts.delivery.ready`). A storm reaches the outbox one "
        "monitor batch (`VXLANMGR_PING_CONCURRENCY` machines) per transaction, each a second or more apart, so "
        "every transaction's alerts are a complete group of their own by the time the worker looks, and go out "
        "as a message each: no alert is lost or repeated (the notes count every machine once per channel), but "
        "a channel gets one message per batch. One message per storm needs the worker to hold a growing group "
        "until it stops growing (within the window), and writes fast enough that the whole storm commits within "
        "the window: each channel adds a row per change to the batch's transaction, which Django's "
        "`bulk_create` prepares field by field."
    ),
    "Sweep (daemon)": (
        "**Monitor.** Each batch's results are written by one `UPDATE … FROM unnest(…)` statement "
        "(`monitoring.checks`). When other work competes for the cores, the ping rounds, the writes and "
        "PostgreSQL share them."
    ),
    "Monitor at scale": (
        "**Monitor at scale.** A monitor has at most `VXLANMGR_PING_CONCURRENCY` (1,000) checks in flight and, "
        "once that many are out, looks for due machines again after its 0.5 s tick (`monitoring.monitor.TICK`): "
        "each batch costs a claim (one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`), the "
        "pings, and one transaction of writes (`UPDATE … FROM jsonb_to_recordset(…)` of the machines, `INSERT … "
        "SELECT` of the ping results; `monitoring.checks`). The machines table keeps 30 % of each page free so "
        "the claim is a HOT update that touches no index. On a shared 2-core machine the pings, the writes and "
        "PostgreSQL compete with other work for the cores, and the due lag grows first (see the load average "
        "in the notes)."
    ),
}
COLUMNS = ["figure", "N", "value", "unit", "reference (same run)", "ratio", "target", "met?", "notes"]


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


def _table(rows: list[Row]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | ---: | ---: | --- | --- | ---: | --- | --- | --- |"]
    for row in rows:
        cells = [row.figure, _cell(row.n), _cell(row.value), row.unit, _cell(row.reference), _cell(row.ratio),
                 _cell(row.target), _met(row), _cell(row.note)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def profile_lines(profile: dict) -> list[str]:
    """The in-process profile of one registration: the top functions by own time, and the project's own
    functions by cumulative time (with what they call), as shares of the profiled time."""
    lines = [
        f"**Where one registration's time goes**: cProfile around {profile['calls']} registrations of new hosts "
        f"in-process, {profile['ms_per_call_profiled']:.1f} ms each under the profiler "
        f"({profile['ms_per_call']:.1f} ms without it).",
    ]
    for heading, items in (("own time (in the function itself)", profile["own"]),
                           ("cumulative time, the project's functions (those that only wrap another left out)",
                            profile["cumulative"])):
        lines += ["", f"| {heading} | share |", "| --- | ---: |"]
        lines += [f"| `{_cell(label)}` | {share * 100:.1f} % |" for label, share in items]
    return lines


def render(rows: list[Row], info: dict[str, str], meta: dict) -> str:
    """docs/benchmarks.md: the machine, the targets met, one section per area, how each figure is measured."""
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
    ]
    explained = {row.area for row in missed} | ({"Sweep (daemon)"} if meta.get("daemon_slow") else set())
    for area in dict.fromkeys(row.area for row in rows):
        lines += ["", f"## {area}", "", *_table([row for row in rows if row.area == area])]
        if area in explained and area in CAUSES:
            lines += ["", CAUSES[area]]
        if area == "Register" and meta.get("register_profile"):
            lines += ["", *profile_lines(meta["register_profile"])]
    lines += ["", "## How each figure is measured", "", *meta["methods"], ""]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

