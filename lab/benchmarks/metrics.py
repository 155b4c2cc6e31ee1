"""Metrics: server time of `GET /metrics` with a series per machine, as Prometheus scrapes it.

Requests go one at a time to the real server over loopback on one kept-alive httpx connection with an API
token; server time = time to the response head (the view renders the whole text before Daphne sends the
first byte). A heartbeat carrying a monitor's counters, as `manage.py monitor` writes it, is in the database,
so the monitor families are rendered too. The last body is parsed with prometheus_client's parser and its
machine figures are checked against the database. In the bench process the collector's two halves are then
timed on their own: reading the database into metric families, and prometheus_client's text rendering, with
Python's cycle collector held off as the view holds it off.
"""

from __future__ import annotations

import asyncio
import time

from .common import Row, cpu_seconds, http_client, median, percentile, timed

WARMUP = 3
TARGET_MS = 300
IN_PROCESS_REPS = 5


def seed_heartbeat() -> None:
    """One live monitor with a few thousand checks counted, as its heartbeat would carry them."""
    from django.utils import timezone

    from monitoring.metrics import CheckCounters
    from monitoring.models import MonitorHeartbeat
    from monitoring.rules import Outcome

    counters = CheckCounters()
    for i in range(5000):
        counters.observe(Outcome(ok=True, rtt_ms=0.02 + (i % 50) / 100) if i % 100 else Outcome(False, None, "timeout"))
    counters.claimed(0.4)
    counters.caught_up()
    MonitorHeartbeat.objects.update_or_create(
        name="bench-monitor:1", defaults={"last_beat_at": timezone.now(), "counters": counters.snapshot()}
    )


async def _scrapes(port: int, pid: int, token: str, reps: int) -> tuple[list[float], bytes, int, float]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/plain"}
    times, cpu, reply = [], 0.0, None
    async with http_client(port) as client:
        for _ in range(WARMUP):
            await timed(client, "GET", "/metrics", headers=headers)
        for _ in range(reps):
            before = cpu_seconds(pid)
            reply = await timed(client, "GET", "/metrics", headers=headers)
            cpu += cpu_seconds(pid) - before
            times.append(reply.first_byte)
    return times, reply.body, reply.status, cpu / reps


class _Collected:
    def __init__(self, families: list):
        self.families = families

    def collect(self) -> list:
        return self.families


def _in_process() -> tuple[float, float]:
    """Median seconds to collect the families (database and objects) and to render them as text."""
    from prometheus_client import generate_latest

    from monitoring.metrics import VxlanmgrCollector, cyclic_gc_paused

    collect_t, render_t = [], []
    for _ in range(IN_PROCESS_REPS):
        with cyclic_gc_paused():  # as the view runs them
            started = time.perf_counter()
            families = list(VxlanmgrCollector(per_machine=True).collect())
            collected = time.perf_counter()
            generate_latest(_Collected(families))
            collect_t.append(collected - started)
            render_t.append(time.perf_counter() - collected)
            del families
    return median(collect_t), median(render_t)


def _check(body: bytes) -> tuple[int, int]:
    """(per-machine up series, samples in all); raises if the machine figures disagree with the database."""
    from prometheus_client.parser import text_string_to_metric_families

    from machines.models import Machine

    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    up = families["vxlanmgr_machine_up"].samples
    counted = {status: sum(s.value for s in families["vxlanmgr_machines"].samples if s.labels["status"] == status)
               for status in Machine.Status.values}
    expected = {status: Machine.objects.filter(status=status).count() for status in Machine.Status.values}
    checked = expected[Machine.Status.ACTIVE] + expected[Machine.Status.UNREACHABLE]
    if counted != expected or len(up) != checked:
        raise RuntimeError(f"/metrics disagrees with the database: {counted} vs {expected}, {len(up)} up series")
    if "vxlanmgr_checks" not in families or not families["vxlanmgr_checks"].samples:
        raise RuntimeError("/metrics has no monitor counters although a monitor heartbeat is live")
    return len(up), sum(len(family.samples) for family in families.values())


def run(ctx, port: int, pid: int, api_token: str, n: int, reps: int) -> list[Row]:
    seed_heartbeat()
    times, body, status, cpu = asyncio.run(_scrapes(port, pid, api_token, reps))
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    up_series, samples = _check(body)
    collect_s, render_s = _in_process()
    ms = median(times) * 1000
    ctx.raw[f"metrics_{n}"] = {"times": times, "bytes": len(body), "samples": samples, "cpu": cpu,
                               "collect": collect_s, "render": render_s}
    ctx.log(f"metrics N={n}: {ms:.1f} ms (p95 {percentile(times, 95) * 1000:.1f} ms), {len(body):,} B, "
            f"{samples:,} samples; in-process collect {collect_s * 1000:.1f} ms, render {render_s * 1000:.1f} ms")
    area = "Metrics"
    note = f"server time (first byte), median of {reps} after {WARMUP} warm-up; API token"
    return [
        Row(area, "GET /metrics with per-machine series", round(ms, 1), "ms", n,
            reference=f"p95 {percentile(times, 95) * 1000:.1f} ms; server CPU {cpu * 1000:.0f} ms/request",
            target=f"< {TARGET_MS} ms", met=ms < TARGET_MS, note=note),
        Row(area, "of that, in-process: database into metric families", round(collect_s * 1000, 1), "ms", n,
            reference=f"prometheus_client's text rendering: {render_s * 1000:.1f} ms",
            note=f"medians of {IN_PROCESS_REPS}, in the bench process"),
        Row(area, "response size", len(body), "bytes", n,
            note=f"{samples:,} samples, {up_series:,} machines with vxlanmgr_machine_up (pending ones have none)"),
    ]
