"""Push: from the monitor committing a status change to every connected dashboard receiving its fragment.

1 or 50 WebSocket clients (the `websockets` library) connect to the real server's /ws/dashboard/ with an
operator's session and tell it, like the page does, which machines they show (the first page, problems
first). A producer then does what the monitor does, 200 times: claims a machine of that page, commits a
check result that flips its status through :func:`monitoring.checks.record_checks`, and calls
:func:`monitoring.broadcast.push` with the same event. The clock starts when record_checks has
committed and stops when a client has received a frame with that machine's row; every client's time
counts. One change at a time, each after the last one reached every client.

The fragment's size is the length of the text frame that carries the changed machine, in characters, the
unit of its reference (FRAGMENT_BEFORE): the size it had with each machine rendered twice, as a table row
and a phone card. Its UTF-8 bytes are a few more (each status icon is one character, three bytes).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from websockets.asyncio.client import ClientConnection, connect

from .common import Row, median, percentile

CHANGES = 200
RECEIVE_TIMEOUT = 10.0
# The fragment's size while each machine was rendered twice (row and card), by N; the target is half.
FRAGMENT_BEFORE = {1000: 2140, 10000: 2146}  # characters of the frame's text
FRAGMENT_TARGET = 0.5
MAX_MESSAGE = 16 * 1024 * 1024


async def open_dashboard(port: int, cookie: str) -> ClientConnection:
    """A WebSocket on /ws/dashboard/ as a logged-in browser opens it: session cookie, same-origin Origin.

    Without compression (the server accepts none) and without keepalive pings (a run lasts seconds).
    """
    return await connect(
        f"ws://127.0.0.1:{port}/ws/dashboard/", origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={cookie}", "Accept-Language": "en"},
        compression=None, proxy=None, ping_interval=None, max_size=MAX_MESSAGE, open_timeout=10,
    )


def _page_view() -> tuple[list[int], list[str]]:
    """The first page's machines and the VNIs its per-VNI line shows: what the page's live-view form sends."""
    from machines import queries

    machines = queries.problems_first(queries.search())
    shown = [each["vni"] for each in queries.vni_summary(queries.inventory_counts()[1])["vnis"]]
    return list(machines.values_list("pk", flat=True)[: queries.PAGE_SIZE]), shown


def _flip(pk: int, token: str, shared: bool = True):
    """Claim the machine and commit one check result that changes its status; returns the event to push."""
    from django.conf import settings
    from django.db import close_old_connections
    from django.utils import timezone

    from machines.models import Machine
    from monitoring import checks
    from monitoring.monitor import change_event
    from monitoring.rules import Outcome

    close_old_connections()
    machine = Machine.objects.get(pk=pk)
    now = timezone.now()
    claim = {"claim_token": token, "claimed_until": now + timedelta(seconds=30)}
    if machine.status == Machine.Status.ACTIVE:
        # Already failed threshold - 1 times: this failure makes it unreachable.
        Machine.objects.filter(pk=pk).update(consecutive_failures=settings.FAILURE_THRESHOLD - 1, **claim)
        outcome = Outcome(ok=False, rtt_ms=None, failure="timeout")
    else:
        Machine.objects.filter(pk=pk).update(**claim)
        outcome = Outcome(ok=True, rtt_ms=0.05, failure="")
    changes = checks.record_checks(token, [checks.CheckRecord(pk, outcome, 0.0 if outcome.ok else 1.0)])
    committed = time.perf_counter()
    if len(changes) != 1:
        raise RuntimeError(f"machine {pk} did not change status")
    event = change_event(changes)  # the very event the monitor pushes
    if not shared:
        del event["id"]  # without an id no two sockets can share a render: each renders its own fragment
    return committed, event


async def _measure(port: int, cookie: str, clients: int, changes: int, shared: bool = True) -> dict:
    from monitoring import broadcast

    executor = ThreadPoolExecutor(1, thread_name_prefix="bench-db")
    loop = asyncio.get_running_loop()
    ids, vnis = await loop.run_in_executor(executor, _page_view)
    sockets = await asyncio.gather(*(open_dashboard(port, cookie) for _ in range(clients)))
    view = json.dumps({"visible": ",".join(map(str, ids)), "status": "", "q": "", "page": "1", "vni": "",
                       "vnis": ",".join(vnis)})
    received: list[dict[int, float]] = [{} for _ in sockets]
    wanted: dict[int, asyncio.Event] = {}
    latencies: list[float] = []
    sizes: list[int] = []
    characters: list[int] = []

    async def reader(index: int, ws: ClientConnection) -> None:
        async for message in ws:
            now = time.perf_counter()
            text = message if isinstance(message, str) else message.decode(errors="replace")
            for pk in list(wanted):
                if pk not in received[index] and f'id="machine-{pk}"' in text:
                    received[index][pk] = now
                    sizes.append(len(text.encode()))
                    characters.append(len(text))
                    if all(pk in r for r in received):
                        wanted[pk].set()

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
    try:
        for ws in sockets:
            await ws.send(view)
        await asyncio.sleep(0.5)  # let every consumer take in its view
        token = uuid.uuid4().hex
        for k in range(changes):
            pk = ids[k % len(ids)]
            for r in received:
                r.pop(pk, None)
            wanted[pk] = asyncio.Event()
            committed, event = await loop.run_in_executor(executor, _flip, pk, token, shared)
            await broadcast.push(event)
            try:
                await asyncio.wait_for(wanted[pk].wait(), RECEIVE_TIMEOUT)
            except TimeoutError:
                missing = sum(1 for r in received if pk not in r)
                raise RuntimeError(f"{missing} of {clients} clients got no fragment for change {k}") from None
            latencies.extend(r[pk] - committed for r in received)
            del wanted[pk]
            await asyncio.sleep(0.01)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        executor.shutdown(wait=False)
    return {"latencies": latencies, "fragment_bytes": median(sizes), "fragment_characters": median(characters)}


def fragment_row(n: int, characters: float, size: float) -> Row:
    """The pushed fragment's length against its length while each machine was rendered twice."""
    before = FRAGMENT_BEFORE.get(n)
    ratio = characters / before if before else None
    return Row("Push", "fragment for one changed machine", round(characters), "characters", n,
               reference=f"{before:,} before the one-markup change" if before else "",
               ratio=round(ratio, 2) if ratio is not None else None,
               target=f"ratio ≤ {FRAGMENT_TARGET}" if before else "",
               met=ratio <= FRAGMENT_TARGET if ratio is not None else None,
               note=f"{size:,.0f} bytes in UTF-8; the machine's markup, the status counts, its VNI's count, "
                    "the announcement; median over the changes")


def run(
    ctx, port: int, cookie: str, n: int, client_counts=(1, 50), changes: int = CHANGES, unshared_changes: int = 0
) -> list[Row]:
    rows = []
    unshared = None
    if unshared_changes:
        # The reference for sharing: the same sockets with events without an id, one render per socket.
        lat = asyncio.run(_measure(port, cookie, max(client_counts), unshared_changes, shared=False))["latencies"]
        unshared = percentile(lat, 95) * 1000
        ctx.log(f"push N={n}, {max(client_counts)} clients, unshared renders: p95 {unshared:.1f} ms")
    sizes, characters = [], []
    for clients in client_counts:
        result = asyncio.run(_measure(port, cookie, clients, changes))
        lat = result["latencies"]
        sizes.append(result["fragment_bytes"])
        characters.append(result["fragment_characters"])
        p50, p95 = percentile(lat, 50) * 1000, percentile(lat, 95) * 1000
        ctx.log(f"push N={n}, {clients} clients: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(lat) * 1000:.1f} ms, "
                f"fragment {result['fragment_bytes']:,.0f} bytes")
        ctx.raw[f"push_{n}_{clients}"] = {"p50": p50, "p95": p95, "max": max(lat) * 1000,
                                           "fragment_bytes": result["fragment_bytes"]}
        target = clients >= 50
        plural = "s" if clients > 1 else ""
        compared = unshared is not None and clients == max(client_counts)
        note = f"{changes} changes × {clients} client{plural} = {len(lat)} receipts; max {max(lat) * 1000:.1f} ms"
        rows += [
            Row("Push", f"commit → fragment received, {clients} client{plural}: p50", round(p50, 1), "ms", n,
                note=note),
            Row("Push", f"commit → fragment received, {clients} client{plural}: p95",
                round(p95, 1), "ms", n, target="< 100 ms" if target else "", met=(p95 < 100) if target else None,
                reference=(f"one render per socket (events without an id): p95 {unshared:.0f} ms, "
                           f"{unshared_changes} changes" if compared else ""),
                ratio=round(p95 / unshared, 2) if compared and unshared else None, note=note),
        ]
    rows.append(fragment_row(n, median(characters), median(sizes)))
    return rows
