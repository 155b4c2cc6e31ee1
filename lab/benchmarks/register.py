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
from collections import Counter
from dataclasses import dataclass

import httpx

from . import common
from .common import ROOT, Deadline, Row, addresses, hostname_for, index_of, mac_for, median, percentile

CONCURRENCY = 50
SCRIPT = ROOT / "docs" / "register-machine.sh"
SCRIPT_PARALLEL = 8
STATIC = "/static/css/app.css"
TARGET_RATIO = 0.5  # of the static file's throughput with the same clients in the same run
PROFILE_CALLS = 300
PROFILE_TOP = 8


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
                reply = await common.fresh_request(
                    port, "PUT", f"/api/machines/{ip}", source=ip, headers=headers, content=body_for(i)
                )
                attempts.append(Attempt(ip, reply.status, time.perf_counter() - started))
            except (OSError, httpx.HTTPError) as exc:
                attempts.append(Attempt(ip, 0, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"))

    started = time.perf_counter()
    async with asyncio.timeout(budget + 60):
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return attempts, time.perf_counter() - started


async def floor(port: int, n: int, concurrency: int = CONCURRENCY) -> float:
    """Requests per second the same clients get for a static file: what the server stack alone allows.

    Each request goes like a registration: a client and connection of its own from a host's address.
    """
    hosts = addresses(n)

    async def client() -> None:
        while hosts:
            reply = await common.fresh_request(port, "GET", STATIC, source=hosts.pop())
            if reply.status != 200:
                raise RuntimeError(f"{STATIC} answered {reply.status}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def _static(port: int, n: int) -> tuple[float, float]:
    """(requests per second, the clients' CPU seconds per request) of one static-file reference run."""
    requests = min(n, 1000)
    cpu = time.process_time()
    rate = asyncio.run(floor(port, requests))
    return rate, (time.process_time() - cpu) / requests


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


def run(ctx, port: int, n: int, reps: int, budget: float, profile: bool = False) -> list[Row]:
    """`reps` storms of N new hosts (the inventory emptied before each); leaves N machines registered.

    With `profile`, first one registration's profile in-process (see :func:`profile_registrations`).
    """
    from django.core.cache import cache

    from machines.models import ApiToken, Machine
    from machines.tokens import create_token

    _register, register_token = create_token(f"bench register {n}", ApiToken.Scope.REGISTER)
    _api, api_token = create_token(f"bench api {n}", ApiToken.Scope.API)
    rows = []
    if profile:
        found = profile_registrations(register_token)
        ctx.raw["register_profile"] = found
        ctx.log(f"register profile: {found['ms_per_call']:.1f} ms per registration in-process "
                f"({found['ms_per_call_profiled']:.1f} ms under cProfile)")
        rows.append(Row(
            "Register", "one registration in-process (Django test client, no Daphne)",
            round(found["ms_per_call"], 1), "ms", note=f"{found['calls']} new hosts one after the other; "
            f"{found['ms_per_call_profiled']:.1f} ms under cProfile, whose top items are listed below"))
    runs, statics = [], []
    if reps == 1:
        statics.append(_static(port, n))
    for rep in range(reps):
        common.reset_inventory()
        cache.clear()  # rate-limit windows: every repetition is a storm of its own (dedicated Redis DB)
        cpu = time.process_time()
        attempts, wall = asyncio.run(storm(port, register_token, n, budget))
        cpu = time.process_time() - cpu
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
                "client_cpu": cpu / max(len(attempts), 1),
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
        statics.append(_static(port, n))
        ctx.log(
            f"register N={n} rep {rep + 1}: {len(attempts)} hosts in {wall:.1f} s = {runs[-1]['throughput']:.0f}/s, "
            f"p50 {runs[-1]['p50'] * 1000:.1f} ms, p99 {runs[-1]['p99'] * 1000:.1f} ms, {len(throttled)} x 429, "
            f"{len(errors)} errors, {registered}/{len(tried)} registered; then a static file: "
            f"{statics[-1][0]:.0f}/s"
        )
    topped_up = _top_up(n)
    static = median(rate for rate, _cpu in statics)
    static_cpu = median(cpu for _rate, cpu in statics)
    client_cpu = median(r["client_cpu"] for r in runs)
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
    ratio = throughput / static
    return [
        *rows,
        Row(area, "boot storm throughput, 50 clients", round(throughput), "registrations/s", n,
            reference=f"a static file, same clients: {static:.0f}/s "
                      f"({', '.join(f'{rate:.0f}' for rate, _cpu in statics)})", ratio=round(ratio, 2),
            target=f"ratio ≥ {TARGET_RATIO}", met=ratio >= TARGET_RATIO,
            note=f"{how}; the clients' CPU: {client_cpu * 1000:.1f} ms per registration, {static_cpu * 1000:.1f} ms "
                 "per static request"),
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


# ---------------------------------------------------------------------------------------------- profile


def profile_registrations(token: str, calls: int = PROFILE_CALLS, top: int = PROFILE_TOP) -> dict:
    """Where one registration's time goes: `calls` new hosts PUT through Django's test client, in-process.

    The test client runs the request through the full middleware stack, the view, PostgreSQL and Redis in
    this thread, so cProfile sees all of it; what it leaves out is Daphne and the hand-off to its worker
    thread, which the static-file reference measures. The hosts are registered twice from an empty
    inventory, timed once without and once under the profiler; the inventory is left empty.
    """
    import cProfile
    import pstats

    from django.core.cache import cache
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/json")
    hosts = list(enumerate(addresses(calls)))

    def register_all() -> float:
        common.reset_inventory()
        cache.clear()
        statuses: Counter[int] = Counter()
        started = time.perf_counter()
        for i, ip in hosts:
            response = client.put(f"/api/machines/{ip}", body_for(i), content_type="application/json", REMOTE_ADDR=ip)
            statuses[response.status_code] += 1
        elapsed = time.perf_counter() - started
        if set(statuses) != {201}:
            raise RuntimeError(f"the profiled registrations answered {dict(statuses)}, not 201 only")
        return elapsed

    register_all()  # warm-up: imports, the URL resolver, connections
    plain = register_all()
    profiler = cProfile.Profile()
    profiler.enable()
    profiled = register_all()
    profiler.disable()
    common.reset_inventory()
    cache.clear()
    return {
        "calls": calls, "ms_per_call": plain / calls * 1000, "ms_per_call_profiled": profiled / calls * 1000,
        **top_items(pstats.Stats(profiler), top),
    }


WRAPPER = 0.95  # a project function spending this share of its time in another project function wraps it


def top_items(stats, top: int) -> dict:
    """The `top` functions by own time, and the project's own functions by cumulative time, as shares.

    Among the project's functions, one that spends nearly all its time in another one, directly or through
    library code (a middleware handing on to the next, a view decorator, a dispatcher to its handler), is
    left out: the function it wraps stands for both.
    """
    total = stats.total_tt or 1.0
    entries = {key: (_label(key), tt / total, ct / total) for key, (_cc, _nc, tt, ct, _callers) in stats.stats.items()}
    callees: dict[tuple, list[tuple[tuple, float]]] = {}
    for key, (_cc, _nc, _tt, _ct, callers) in stats.stats.items():
        for caller, (_ccc, _cnc, _ctt, edge_ct) in callers.items():
            callees.setdefault(caller, []).append((key, edge_ct))

    def wraps_another(key) -> bool:
        threshold = WRAPPER * stats.stats[key][3]
        seen, stack = {key}, [key]
        while stack:
            for callee, edge_ct in callees.get(stack.pop(), []):
                if edge_ct >= threshold and callee not in seen:
                    if _is_project(callee[0]):
                        return True
                    seen.add(callee)
                    stack.append(callee)
        return False

    own = sorted(entries.values(), key=lambda e: e[1], reverse=True)[:top]
    ours = [entry for key, entry in entries.items() if _is_project(key[0]) and not wraps_another(key)]
    cumulative = sorted(ours, key=lambda e: e[2], reverse=True)[:top]
    return {
        "own": [(label, round(own_share, 4)) for label, own_share, _cum in own],
        "cumulative": [(label, round(cum_share, 4)) for label, _own, cum_share in cumulative],
    }


def _is_project(filename: str) -> bool:
    """Code of the product itself (machines, monitoring, vxlanmgr): not libraries, not this harness."""
    root = f"{ROOT}/"
    return filename.startswith(root) and not filename.startswith((f"{root}.venv/", f"{root}lab/"))


def _label(key: tuple[str, int, str]) -> str:
    """`path/module.py:line(function)`, the path from the project, site-packages or the standard library;
    a built-in's own name."""
    filename, line, name = key
    if filename in ("~", ""):
        return name
    for marker in ("/site-packages/", f"{ROOT}/", "/lib/python3."):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "/lib/python3.":
                filename = filename.partition("/")[2]
            break
    return f"{filename}:{line}({name})"
