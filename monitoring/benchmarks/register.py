"""Register: a boot storm of N hosts registering through the real server with 50 concurrent clients.

Every host connects from its own loopback address (127.10.x.y, bound as the client socket's source) and
uses a *register* token, which may only register the address the request comes from: exactly what a
fleet of rebooting hosts running docs/register-machine.sh does, so the per-IP rate limit applies per
host as in production. Hosts answered 429 (the designed back-pressure of the global rate limit) are then
registered by the real docs/register-machine.sh with its retry and backoff path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass

from .common import ROOT, Deadline, Row, addresses, hostname_for, index_of, mac_for, median, percentile, request

CONCURRENCY = 50
SCRIPT = ROOT / "docs" / "register-machine.sh"
SCRIPT_PARALLEL = 8


@dataclass
class Attempt:
    ip: str
    status: int  # 0: no HTTP answer
    seconds: float
    error: str = ""


def body_for(i: int) -> bytes:
    return json.dumps(
        {"hostname": hostname_for(i), "mac_address": mac_for(i), "vni": 1000 + i % 8, "extra_data": {"boot": "storm"}}
    ).encode()


async def storm(port: int, token: str, n: int, budget: float, concurrency: int = CONCURRENCY) -> tuple:
    """PUT every host once, `concurrency` at a time, starting no new host after `budget` seconds;
    returns (attempts, wall seconds)."""
    queue = list(enumerate(addresses(n)))
    queue.reverse()
    attempts: list[Attempt] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}

    stop_at = time.perf_counter() + budget

    async def client() -> None:
        while queue and time.perf_counter() < stop_at:
            i, ip = queue.pop()
            started = time.perf_counter()
            try:
                status, _h, _body, _ttfb, _total = await request(
                    "PUT", port, f"/api/machines/{ip}", headers=headers, body=body_for(i), source=ip, timeout=30
                )
                attempts.append(Attempt(ip, status, time.perf_counter() - started))
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                attempts.append(Attempt(ip, 0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"))

    started = time.perf_counter()
    async with asyncio.timeout(budget + 60):
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return attempts, time.perf_counter() - started


async def floor(port: int, n: int, concurrency: int = CONCURRENCY) -> float:
    """Requests per second the same clients get for a static file: what the server stack alone allows."""
    paths = ["/static/css/app.css"] * n

    async def client() -> None:
        while paths:
            paths.pop()
            await request("GET", port, "/static/css/app.css", timeout=30)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def retry_with_script(port: int, token: str, failed: list[str], deadline: Deadline) -> dict[str, int]:
    """Register the given hosts with docs/register-machine.sh (its real retry path); returns ip -> exit code."""
    codes: dict[str, int] = {}
    pending = list(failed)
    running: list[tuple[str, subprocess.Popen]] = []
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "VXLANMGR_RETRY_BASE": "0.5"}
    while pending or running:
        deadline.check()
        while pending and len(running) < SCRIPT_PARALLEL:
            ip = pending.pop()
            i = index_of(ip)
            argv = [
                "sh", str(SCRIPT), "--url", f"http://127.0.0.1:{port}", "--config", "/dev/null",
                "--interface", "lo", "--ip", ip, "--hostname", hostname_for(i), "--mac", mac_for(i),
                "--vni", str(1000 + i % 8), "--max-attempts", "12",
            ]
            # The token goes in the environment, as the script recommends (arguments show in ps).
            proc = subprocess.Popen(
                argv, env={**env, "VXLANMGR_TOKEN": token}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            running.append((ip, proc))
        for ip, proc in list(running):
            if proc.poll() is not None:
                codes[ip] = proc.returncode
                running.remove((ip, proc))
        time.sleep(0.05)
    return codes


def _top_up(n: int) -> int:
    """Insert the hosts a time-limited storm did not reach, as registered but never checked; returns how many."""
    from django.utils import timezone

    from machines.models import Machine

    known = set(Machine.objects.values_list("ip_address", flat=True))
    now = timezone.now()
    missing = [
        Machine(ip_address=ip, hostname=hostname_for(i), mac_address=mac_for(i), vni=1000 + i % 8,
                extra_data={"boot": "storm"}, registered_at=now, last_registered_at=now, next_check_at=now)
        for i, ip in enumerate(addresses(n)) if ip not in known
    ]
    Machine.objects.bulk_create(missing, batch_size=2000)
    return len(missing)


def run(ctx, port: int, n: int, reps: int, budget: float) -> list[Row]:
    """`reps` storms of N new hosts (the inventory emptied before each); leaves N machines registered."""
    from django.core.cache import cache

    from machines.models import ApiToken, Machine
    from machines.tokens import create_token

    from .common import reset_inventory

    _register, register_token = create_token(f"bench register {n}", ApiToken.Scope.REGISTER)
    _api, api_token = create_token(f"bench api {n}", ApiToken.Scope.API)
    runs = []
    for rep in range(reps):
        reset_inventory()
        cache.clear()  # rate-limit windows: every repetition is a storm of its own (dedicated Redis DB)
        attempts, wall = asyncio.run(storm(port, register_token, n, budget))
        ok = [a for a in attempts if a.status in (200, 201)]
        throttled = [a.ip for a in attempts if a.status == 429]
        errors = [a for a in attempts if a.status not in (200, 201, 429)]
        codes = retry_with_script(port, api_token, throttled, Deadline(240, "the register-machine.sh retries"))
        tried = [a.ip for a in attempts]
        registered = Machine.objects.filter(ip_address__in=tried).count()
        latencies = [a.seconds for a in attempts]
        runs.append(
            {
                "throughput": len(attempts) / wall,
                "hosts": len(attempts),
                "wall": wall,
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "ok": len(ok),
                "throttled": len(throttled),
                "errors": len(errors),
                "error_sample": sorted({f"{a.status} {a.error}".strip() for a in errors})[:3],
                "script_failed": sum(1 for code in codes.values() if code != 0),
                "all_registered": registered == len(tried),
            }
        )
        ctx.log(
            f"register N={n} rep {rep + 1}: {len(attempts)} hosts in {wall:.1f} s = {runs[-1]['throughput']:.0f}/s, "
            f"p50 {runs[-1]['p50'] * 1000:.1f} ms, p99 {runs[-1]['p99'] * 1000:.1f} ms, {len(throttled)} x 429, "
            f"{len(errors)} errors, {registered}/{len(tried)} registered"
        )
    topped_up = _top_up(n)
    static = asyncio.run(floor(port, min(n, 1000)))
    ctx.log(f"register N={n}: a static file with the same 50 clients: {static:.0f}/s")
    throughput = median(r["throughput"] for r in runs)
    p50, p95, p99 = (median(r[k] for r in runs) * 1000 for k in ("p50", "p95", "p99"))
    errors = sum(r["errors"] for r in runs)
    throttled = sum(r["throttled"] for r in runs)
    script_failed = sum(r["script_failed"] for r in runs)
    all_registered = all(r["all_registered"] for r in runs)
    samples = sorted({s for r in runs for s in r["error_sample"]})
    hosts = min(r["hosts"] for r in runs)
    area = "Register"
    how = f"median of {reps} storms" if reps > 1 else "one storm"
    if hosts < n:
        how += f"; the {budget:.0f} s budget ended it after {hosts:,} of {n:,} hosts (the rest inserted directly)"
    return [
        Row(area, "boot storm throughput, 50 clients", round(throughput), "registrations/s", n,
            reference=f"a static file, same clients: {static:.0f}/s", ratio=round(throughput / static, 2),
            target="≥ 300/s", met=throughput >= 300, note=how),
        Row(area, "latency p50", round(p50, 1), "ms", n, note=how),
        Row(area, "latency p95", round(p95, 1), "ms", n, note=how),
        Row(area, "latency p99", round(p99, 1), "ms", n, target="< 250 ms", met=p99 < 250, note=how),
        Row(area, "errors other than the designed 429", errors, "requests", n, target="0", met=errors == 0,
            note="; ".join(samples) if samples else f"{sum(r['hosts'] for r in runs):,} requests"),
        Row(area, "429 answers, then registered by docs/register-machine.sh", throttled, "hosts", n,
            target="every host registered", met=all_registered and script_failed == 0,
            note=("no retry needed; every host registered" if throttled == 0 and all_registered
                  else f"{script_failed} script runs failed")
            + ("" if all_registered else "; NOT every host registered")
            + (f"; {topped_up:,} hosts beyond the budget inserted directly" if topped_up else "")),
    ]
