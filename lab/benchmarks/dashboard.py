"""Dashboard: server time of the full page, of the filtered fragment htmx asks for, and of the JSON list.

Requests go one at a time to the real server over loopback on one kept-alive httpx connection per figure,
the figures taking turns, so the time to the response head is the server's time: Django renders the whole
body before Daphne sends the first byte, and loopback adds well under a millisecond (the client's own share
is measured too). A few warm-up requests per figure come first (they also open the connections).

The first page of 100 machines is compared with the JSON list of 500 machines in the same run: both read
the same inventory, so their ratio shows what the page's markup costs per machine, independent of how
busy the machine is (which moves both absolute times alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys

from .common import Row, cpu_seconds, http_client, median, percentile, timed

FILTER_QUERY = "127.10.3."  # an IP prefix: 256 machines at 10,000, 232 at 1,000
WARMUP = 3
PAGE_VS_LIST = 1.0  # target: the first page costs no more server time than the JSON list of 500
_MACHINE_TAG = re.compile(rb'<[a-z]+\s[^>]*\bid="machine-\d+"[^>]*>')
_STATUS_CLASS = re.compile(rb'\bclass="[^"]*\brow-(\w+)')


# A loopback HTTP server that answers every request at once, in a process of its own: the time httpx takes
# to get its response head is then the client's own share of every server time above.
_RESPONDER = """
import asyncio
async def answer(reader, writer):
    try:
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def client_overhead(reps: int) -> float:
    """Median seconds httpx takes to a response head from a server that answers at once (after a warm-up)."""
    responder = subprocess.Popen([sys.executable, "-c", _RESPONDER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(responder.stdout.readline())

        async def measure() -> list[float]:
            async with http_client(port) as client:
                times = [(await timed(client, "GET", "/")).first_byte for _ in range(WARMUP + reps)]
            return times[WARMUP:]

        return median(asyncio.run(measure()))
    finally:
        responder.kill()
        responder.wait()


def machine_statuses(page: bytes) -> list[str]:
    """The status of every machine element (id="machine-<pk>") on a page, in page order."""
    statuses = []
    for tag in _MACHINE_TAG.findall(page):
        match = _STATUS_CLASS.search(tag)
        if match:
            statuses.append(match.group(1).decode())
    return statuses


def problems_first(statuses: list[str]) -> bool:
    rank = {"unreachable": 0, "pending": 1}
    return statuses == sorted(statuses, key=lambda status: rank.get(status, 2))


async def _interleaved(port: int, pid: int, figures: dict[str, tuple[str, dict]], reps: int) -> dict:
    """name -> (server times, last body, last status, server CPU seconds per request) of `reps` requests per
    figure, one at a time, the figures taking turns so that the machine's changing load falls on all alike."""
    results = {name: ([], b"", 0, 0.0) for name in figures}
    async with contextlib.AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(http_client(port)) for name in figures}
        for name, (path, headers) in figures.items():
            for _ in range(WARMUP):
                await timed(clients[name], "GET", path, headers=headers)
        for _ in range(reps):
            for name, (path, headers) in figures.items():
                times, _body, _status, cpu = results[name]
                before = cpu_seconds(pid)
                reply = await timed(clients[name], "GET", path, headers=headers)
                times.append(reply.first_byte)
                results[name] = (times, reply.body, reply.status, cpu + cpu_seconds(pid) - before)
    return {name: (times, body, status, cpu / reps) for name, (times, body, status, cpu) in results.items()}


def run(ctx, port: int, pid: int, cookie: str, api_token: str, n: int, reps: int) -> list[Row]:
    from machines import queries

    browser = {"Cookie": f"sessionid={cookie}", "Accept-Language": "en"}
    fragment = {**browser, "HX-Request": "true", "HX-Current-URL": f"http://127.0.0.1:{port}/"}
    api = {"Authorization": f"Bearer {api_token}", "Accept": "application/json"}

    measured = asyncio.run(_interleaved(port, pid, {
        "page": ("/", browser),
        "fragment": (f"/?q={FILTER_QUERY}", fragment),
        "list": ("/api/machines?page_size=500", api),
    }, reps))
    page_t, page, page_status, page_cpu = measured["page"]
    frag_t, frag, frag_status, frag_cpu = measured["fragment"]
    list_t, listing, list_status, list_cpu = measured["list"]
    for what, status in (("page", page_status), ("fragment", frag_status), ("JSON list", list_status)):
        if status != 200:
            raise RuntimeError(f"the dashboard {what} answered {status}")
    statuses = machine_statuses(page)
    ordered = problems_first(statuses)
    usable = ordered and 0 < len(statuses) <= queries.PAGE_SIZE and b'class="pagination"' in page
    if n <= queries.PAGE_SIZE:
        usable = ordered
    overhead_ms = client_overhead(10 * reps) * 1000
    page_ms, list_ms = median(page_t) * 1000, median(list_t) * 1000
    ratio = page_ms / list_ms
    ctx.log(
        f"dashboard N={n}: page {page_ms:.1f} ms ({len(page)} B, {len(statuses)} machines), fragment "
        f"{median(frag_t) * 1000:.1f} ms, JSON list {list_ms:.1f} ms (p95 {percentile(list_t, 95) * 1000:.1f} ms); "
        f"page / list {ratio:.2f}"
    )
    limit = 150 if n <= 1000 else 300
    area, note = "Dashboard", f"server time (first byte), median of {reps}, figures in turn, after {WARMUP} warm-up"
    return [
        Row(area, "full page, first page", round(page_ms, 1), "ms", n,
            reference=f"p95 {percentile(page_t, 95) * 1000:.1f} ms; server CPU {page_cpu * 1000:.0f} ms/request",
            target=f"< {limit} ms", met=page_ms < limit, note=note),
        Row(area, f"first page ({queries.PAGE_SIZE} machines) vs JSON list of 500: server time", round(page_ms, 1),
            "ms", n, reference=f"JSON list, page_size=500: {list_ms:.1f} ms", ratio=round(ratio, 2),
            target=f"ratio ≤ {PAGE_VS_LIST}", met=ratio <= PAGE_VS_LIST,
            note=f"medians of {reps}, same run; server CPU {page_cpu * 1000:.0f} vs {list_cpu * 1000:.0f} ms/request"),
        Row(area, f"filtered fragment (HX-Request, q={FILTER_QUERY})", round(median(frag_t) * 1000, 1), "ms", n,
            reference=f"p95 {percentile(frag_t, 95) * 1000:.1f} ms; server CPU {frag_cpu * 1000:.0f} ms/request",
            note=f"{note}; {len(frag):,} bytes"),
        Row(area, "JSON list, page_size=500: p95", round(percentile(list_t, 95) * 1000, 1), "ms", n,
            reference=f"median {list_ms:.1f} ms", note=f"{reps} requests; {len(listing):,} bytes"),
        Row(area, "full page size", len(page), "bytes", n,
            note=f"{len(statuses)} machines of {n:,} (page size {queries.PAGE_SIZE})"),
        Row(area, "the client's own share of each server time (httpx)", round(overhead_ms, 2), "ms", n,
            note=f"median of {10 * reps} requests to a loopback server that answers at once; included in the "
                 "times above"),
        Row(area, "page stays usable: paginated, problems first", "yes" if usable else "no", "", n,
            target="paginated, problems first" if n > queries.PAGE_SIZE else "", met=usable,
            note=f"first machines: {', '.join(statuses[:3])} …; last: {statuses[-1] if statuses else '-'}"),
    ]
