"""Dashboard: server time of the full page, of the filtered fragment htmx asks for, and of the JSON list.

Requests go one at a time to the real server over loopback, so the time to the first response byte is
the server's time (Django renders the whole body before Daphne sends the first byte; loopback adds
well under a millisecond). A few warm-up requests come first.
"""

from __future__ import annotations

import asyncio
import re

from .common import Row, cpu_seconds, median, percentile, request

FILTER_QUERY = "127.10.3."  # an IP prefix: 256 machines at 10,000, 232 at 1,000
_ROW = re.compile(rb'<tr id="machine-\d+" class="machine-row row-(\w+)')
WARMUP = 3


async def _timed(port: int, pid: int, path: str, headers: dict[str, str], reps: int) -> tuple:
    """(server times, body, status, server CPU seconds per request) of `reps` requests, one at a time."""
    for _ in range(WARMUP):
        await request("GET", port, path, headers=headers)
    times, body, status = [], b"", 0
    cpu = cpu_seconds(pid)
    for _ in range(reps):
        status, _headers, body, first_byte, _total = await request("GET", port, path, headers=headers)
        times.append(first_byte)
    return times, body, status, (cpu_seconds(pid) - cpu) / reps


def run(ctx, port: int, pid: int, cookie: str, api_token: str, n: int, reps: int) -> list[Row]:
    from machines import queries

    browser = {"Cookie": f"sessionid={cookie}", "Accept-Language": "en"}
    fragment = {**browser, "HX-Request": "true", "HX-Current-URL": f"http://127.0.0.1:{port}/"}
    api = {"Authorization": f"Bearer {api_token}", "Accept": "application/json"}

    async def measure():
        page = await _timed(port, pid, "/", browser, reps)
        filtered = await _timed(port, pid, f"/?q={FILTER_QUERY}", fragment, reps)
        listing = await _timed(port, pid, "/api/machines?page_size=500", api, reps)
        return page, filtered, listing

    (page_t, page, page_status, page_cpu), (frag_t, frag, frag_status, frag_cpu), (
        list_t, listing, list_status, _list_cpu) = asyncio.run(measure())
    for what, status in (("page", page_status), ("fragment", frag_status), ("JSON list", list_status)):
        if status != 200:
            raise RuntimeError(f"the dashboard {what} answered {status}")
    statuses = [m.decode() for m in _ROW.findall(page)]
    problems_first = statuses == sorted(statuses, key=lambda s: {"unreachable": 0, "pending": 1}.get(s, 2))
    usable = len(statuses) <= queries.PAGE_SIZE and problems_first and b'class="pagination"' in page
    if n <= queries.PAGE_SIZE:
        usable = problems_first
    ctx.log(
        f"dashboard N={n}: page {median(page_t) * 1000:.1f} ms ({len(page)} B, {len(statuses)} rows), fragment "
        f"{median(frag_t) * 1000:.1f} ms, JSON p95 {percentile(list_t, 95) * 1000:.1f} ms"
    )
    limit = 150 if n <= 1000 else 300
    area, note = "Dashboard", f"server time (first byte), median of {reps} after {WARMUP} warm-up"
    return [
        Row(area, "full page, first page", round(median(page_t) * 1000, 1), "ms", n,
            reference=f"p95 {percentile(page_t, 95) * 1000:.1f} ms; server CPU {page_cpu * 1000:.0f} ms/request",
            target=f"< {limit} ms", met=median(page_t) * 1000 < limit, note=note),
        Row(area, f"filtered fragment (HX-Request, q={FILTER_QUERY})", round(median(frag_t) * 1000, 1), "ms", n,
            reference=f"p95 {percentile(frag_t, 95) * 1000:.1f} ms; server CPU {frag_cpu * 1000:.0f} ms/request",
            note=f"{note}; {len(frag):,} bytes"),
        Row(area, "JSON list, page_size=500: p95", round(percentile(list_t, 95) * 1000, 1), "ms", n,
            reference=f"median {median(list_t) * 1000:.1f} ms", note=f"{reps} requests; {len(listing):,} bytes"),
        Row(area, "full page size", len(page), "bytes", n,
            note=f"{len(statuses)} rows of {n:,} (page size {queries.PAGE_SIZE})"),
        Row(area, "page stays usable: paginated, problems first", "yes" if usable else "no", "", n,
            target="paginated, problems first" if n > queries.PAGE_SIZE else "", met=usable,
            note=f"first rows: {', '.join(statuses[:3])} …; last: {statuses[-1] if statuses else '-'}"),
    ]
