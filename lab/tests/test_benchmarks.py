"""The benchmark harness's own pieces: statistics, fping parsing, its HTTP and WebSocket clients, the report."""

import asyncio
import math
import os

import pytest
from websockets.asyncio.server import serve

from lab.benchmarks import common, dashboard, push, register, report, sweep
from lab.benchmarks.common import Row


class TestStatistics:
    def test_percentiles_interpolate_between_ranks(self):
        data = [5, 1, 4, 2, 3]
        assert common.percentile(data, 0) == 1
        assert common.percentile(data, 50) == 3
        assert common.percentile(data, 100) == 5
        assert common.percentile(data, 95) == pytest.approx(4.8)
        assert common.percentile([7], 99) == 7
        assert math.isnan(common.percentile([], 50))

    def test_median(self):
        assert common.median([3, 1, 2]) == 2
        assert common.median([4, 1, 2, 3]) == 2.5
        assert math.isnan(common.median([]))


def test_benchmark_addresses_are_loopback_and_invertible():
    addresses = common.addresses(10_000)
    assert addresses[0] == "127.10.0.0" and addresses[-1] == "127.10.39.15"
    assert len(set(addresses)) == 10_000
    assert all(common.index_of(address) == i for i, address in enumerate(addresses))
    with pytest.raises(ValueError):
        common.addresses(common.MAX_HOSTS + 1)


def test_fping_summary_lines_are_counted():
    stderr = (
        "127.10.0.0 : xmt/rcv/%loss = 1/1/0%, min/avg/max = 0.03/0.03/0.03\n"
        "127.10.0.1    : xmt/rcv/%loss = 1/0/100%\n"
        "127.10.0.2 : xmt/rcv/%loss = 1/1/0%, min/avg/max = 0.01/0.01/0.01\n"
        "ICMP Host Unreachable from 10.0.0.1 for ICMP Echo sent to 10.0.0.9\n"
    )
    assert sweep.parse_fping(stderr) == (2, 3)


# ---------------------------------------------------------------------------------------------- HTTP


class FakeServer:
    """A loopback HTTP/1.1 server that answers 201 to a PUT from the address its path names, 403 otherwise,
    and 200 to anything else; it records each connection's peer and the requests it carried."""

    def __init__(self):
        self.connections: list[dict] = []
        self.paths: list[str] = []

    async def handle(self, reader, writer):
        connection = {"peer": writer.get_extra_info("peername")[0], "requests": []}
        self.connections.append(connection)
        try:
            while line := await reader.readline():
                method, path, _version = line.decode().split()
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _sep, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                connection["requests"].append((method, path, headers, body))
                self.paths.append(path)
                status = 200
                if method == "PUT":
                    status = 201 if path.rsplit("/", 1)[1] == connection["peer"] else 403
                answer = f"{method} {path}".encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info):
        self.server.close()


async def test_a_fresh_request_comes_from_its_source_address_and_ignores_proxy_settings(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:9")  # would swallow the request if it were used
    monkeypatch.setenv("ALL_PROXY", "http://192.0.2.1:9")
    async with FakeServer() as server:
        reply = await common.fresh_request(server.port, "PUT", "/api/machines/127.10.0.7", source="127.10.0.7",
                                           headers={"Content-Type": "application/json"}, content=b"{}")
    assert (reply.status, reply.body) == (201, b"PUT /api/machines/127.10.0.7")
    assert 0 < reply.first_byte <= reply.total
    [connection] = server.connections
    assert connection["peer"] == "127.10.0.7"
    assert connection["requests"][0][3] == b"{}"


async def test_a_dashboard_client_keeps_one_connection_for_its_requests():
    async with FakeServer() as server, common.http_client(server.port) as client:
        replies = [await common.timed(client, "GET", f"/?n={i}", headers={"HX-Request": "true"}) for i in range(4)]
    assert [r.body for r in replies] == [f"GET /?n={i}".encode() for i in range(4)]
    [connection] = server.connections
    assert all(headers["hx-request"] == "true" for _m, _p, headers, _b in connection["requests"])


async def test_dashboard_figures_take_turns_after_their_warm_up():
    async with FakeServer() as server:
        measured = await dashboard._interleaved(server.port, os.getpid(), {"a": ("/a", {}), "b": ("/b", {})}, 3)
    warmup = ["/a"] * dashboard.WARMUP + ["/b"] * dashboard.WARMUP
    assert server.paths == [*warmup, "/a", "/b", "/a", "/b", "/a", "/b"]
    assert len(server.connections) == 2  # one kept-alive connection per figure
    for name in ("a", "b"):
        times, body, status, cpu = measured[name]
        assert len(times) == 3 and all(t > 0 for t in times)
        assert (body, status) == (f"GET /{name}".encode(), 200) and cpu >= 0


async def test_the_storm_opens_one_connection_per_host_from_that_hosts_address():
    async with FakeServer() as server:
        attempts, wall = await register.storm(server.port, "secret", 30, budget=30, concurrency=7)
    assert sorted(a.ip for a in attempts) == sorted(common.addresses(30))
    assert all(a.status == 201 and a.seconds > 0 for a in attempts), attempts
    assert wall > 0
    assert len(server.connections) == 30
    for connection in server.connections:
        [(method, path, headers, body)] = connection["requests"]
        assert (method, path) == ("PUT", f"/api/machines/{connection['peer']}")
        assert headers["authorization"] == "Bearer secret"
        assert body == register.body_for(common.index_of(connection["peer"]))


async def test_the_static_reference_fetches_the_same_way():
    async with FakeServer() as server:
        rate = await register.floor(server.port, 20, concurrency=4)
    assert rate > 0
    assert len(server.connections) == 20
    assert {c["requests"][0][1] for c in server.connections} == {register.STATIC}


def test_the_clients_own_share_of_a_server_time_is_measured_against_an_instant_responder():
    overhead = dashboard.client_overhead(20)
    assert 0 < overhead < 0.5


# ---------------------------------------------------------------------------------------------- WebSocket


async def test_a_dashboard_socket_is_opened_as_a_logged_in_browser_opens_it():
    seen = {}

    async def handler(ws):
        seen.update(path=ws.request.path, headers=ws.request.headers)
        await ws.send("<tr id=\"machine-1\">●</tr>")
        seen["view"] = await ws.recv()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await push.open_dashboard(port, "the-session")
        assert await ws.recv() == "<tr id=\"machine-1\">●</tr>"
        await ws.send("{}")
        await ws.close()
    assert seen["path"] == "/ws/dashboard/" and seen["view"] == "{}"
    assert seen["headers"]["Cookie"] == "sessionid=the-session"
    assert seen["headers"]["Origin"] == f"http://127.0.0.1:{port}"
    assert "Sec-WebSocket-Extensions" not in seen["headers"]  # no compression offered


# ---------------------------------------------------------------------------------------------- figures


def test_machine_statuses_are_read_from_rows_not_cards():
    page = (
        b'<tr id="machine-9" class="machine-row row-unreachable flash" hx-swap-oob="true"><td>x</td></tr>'
        b'<li id="machine-card-9" class="machine-card row-unreachable"></li>'
        b'<tr id="machine-3" class="machine-row row-pending">'
        b'<div class="machine row-active" id="machine-12" data-x="1">'  # attributes in another order
        b'<tr id="machine-summary" class="row-active">'
    )
    assert dashboard.machine_statuses(page) == ["unreachable", "pending", "active"]
    assert dashboard.problems_first(["unreachable", "pending", "active", "active"])
    assert not dashboard.problems_first(["unreachable", "active", "pending"])


@pytest.mark.parametrize(("n", "characters", "ratio", "met"), [
    (1000, 1070, 0.5, True), (1000, 2140, 1.0, False), (10_000, 1000, 0.47, True), (5000, 1000, None, None),
])
def test_the_fragment_is_compared_with_its_length_before_the_one_markup_change(n, characters, ratio, met):
    row = push.fragment_row(n, characters, characters + 12)
    assert (row.value, row.unit, row.ratio, row.met) == (characters, "characters", ratio, met)
    assert bool(row.target) == (met is not None)
    assert f"{characters + 12:,} bytes in UTF-8" in row.note


class TestProfile:
    def test_labels_name_the_module_from_the_project_a_library_or_the_standard_library(self):
        root = str(common.ROOT)
        assert register._label((f"{root}/machines/api.py", 70, "_register")) == "machines/api.py:70(_register)"
        assert register._label(("/x/.venv/lib/python3.11/site-packages/django/db/utils.py", 9, "f")) == (
            "django/db/utils.py:9(f)")
        assert register._label(("/usr/lib/python3.11/json/decoder.py", 1, "decode")) == "json/decoder.py:1(decode)"
        assert register._label(("~", 0, "<built-in method time.sleep>")) == "<built-in method time.sleep>"

    def test_top_items_rank_own_time_and_the_projects_cumulative_time_without_mere_wrappers(self):
        root = str(common.ROOT)
        address = (f"{root}/vxlanmgr/client_address.py", 1, "__call__")
        inner = (f"{root}/.venv/lib/python3.11/site-packages/django/core/handlers/exception.py", 1, "inner")
        middleware = (f"{root}/vxlanmgr/middleware.py", 1, "__call__")
        view = (f"{root}/machines/api.py", 1, "view")
        tokens = (f"{root}/machines/tokens.py", 1, "authenticate")
        recursive = (f"{root}/machines/queries.py", 1, "walk")
        harness = (f"{root}/lab/benchmarks/register.py", 1, "register_all")
        cursor = (f"{root}/.venv/lib/python3.11/site-packages/psycopg/cursor.py", 1, "execute")
        recv = ("~", 0, "<method 'recv' of '_socket.socket' objects>")

        class Stats:
            total_tt = 2.0
            stats = {  # key: (primitive calls, calls, own time, cumulative time, {caller: (..., edge cumulative)})
                harness: (1, 1, 0.0, 2.0, {}),
                address: (1, 1, 0.01, 1.95, {harness: (1, 1, 0.01, 1.95)}),
                inner: (1, 1, 0.01, 1.92, {address: (1, 1, 0.01, 1.92)}),  # library code between two of ours
                middleware: (1, 1, 0.02, 1.9, {inner: (1, 1, 0.02, 1.9)}),
                view: (1, 1, 0.1, 1.86, {middleware: (1, 1, 0.1, 1.86)}),  # 98 % of the middleware's time
                tokens: (1, 1, 0.4, 0.5, {view: (1, 1, 0.4, 0.5)}),
                recursive: (2, 3, 0.05, 0.3, {view: (2, 2, 0.05, 0.3), recursive: (1, 1, 0.01, 0.29)}),
                cursor: (1, 1, 0.2, 0.9, {view: (1, 1, 0.2, 0.9)}),
                recv: (1, 1, 1.2, 1.2, {cursor: (1, 1, 1.2, 1.2)}),
            }

        found = register.top_items(Stats(), 4)
        assert found["own"] == [
            ("<method 'recv' of '_socket.socket' objects>", 0.6), ("machines/tokens.py:1(authenticate)", 0.2),
            ("psycopg/cursor.py:1(execute)", 0.1), ("machines/api.py:1(view)", 0.05),
        ]
        assert found["cumulative"] == [  # the two middleware calls only wrap the view
            ("machines/api.py:1(view)", 0.93), ("machines/tokens.py:1(authenticate)", 0.25),
            ("machines/queries.py:1(walk)", 0.15),  # calling itself does not make it a wrapper
        ]


# ---------------------------------------------------------------------------------------------- the report


META = {
    "date": "2026-01-01 00:00 UTC", "duration": 420, "load_before": "0.1 0.1 0.1", "load_after": "1 1 1",
    "max_machines": 10000, "server_note": "defaults", "methods": ["- **Sweep**: how"],
}


def test_the_report_says_which_targets_are_met_area_by_area():
    rows = [
        Row("Register", "boot storm throughput, 50 clients", 120, "registrations/s", 1000,
            reference="a static file, same clients: 250/s", ratio=0.48, target="ratio ≥ 0.5", met=False),
        Row("Sweep", "one round, all answering: wall", 180.5, "ms", 10_000, reference="fping -i0: 200.0 ms",
            ratio=0.9, target="ratio ≤ 1.0", met=True),
        Row("Push", "commit → fragment received, 50 clients: p95", 140.2, "ms", 10_000, target="< 100 ms",
            met=False, note="a | pipe"),
        Row("Storage", "ping results per machine per day", 250.3, "KiB"),
        Row("Register", "latency p99", 99.0, "ms", 10_000, target="< 250 ms", met=True),
    ]
    profile = {"calls": 300, "ms_per_call": 4.2, "ms_per_call_profiled": 9.9,
               "own": [("<built-in method select>", 0.312), ("django/template/base.py:1(render)", 0.05)],
               "cumulative": [("machines/api.py:70(_register)", 0.81)]}
    text = report.render(rows, {"CPU": "Test CPU, 2 logical cores", "kernel": "Linux 6"},
                         {**META, "register_profile": profile})
    assert "# Benchmarks" in text and "2026-01-01 00:00 UTC" in text and "Test CPU, 2 logical cores" in text
    assert ("**Targets: 2 of 4 met.** Missed: Register boot storm throughput, 50 clients at N=1,000; "
            "Push commit → fragment received, 50 clients: p95 at N=10,000.") in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Register", "## Sweep", "## Push", "## Storage", "## How each figure is measured"]
    register_section = text.split("## Register")[1].split("## Sweep")[0]
    assert "| latency p99 | 10,000 | 99.00 | ms |" in register_section  # both Register rows, in their order
    assert register_section.index("boot storm") < register_section.index("latency p99")
    assert report.CAUSES["Register"] in register_section
    assert "| `<built-in method select>` | 31.2 % |" in register_section
    assert "| `machines/api.py:70(_register)` | 81.0 % |" in register_section
    assert "9.9 ms each under the profiler (4.2 ms without it)" in register_section
    assert "| one round, all answering: wall | 10,000 | 180 | ms | fping -i0: 200.0 ms | 0.90 |" in text
    assert "| **yes** |" in text and "| **no** |" in text and "a \\| pipe" in text
    assert report.CAUSES["Push"] in text and report.CAUSES["Sweep"] not in text
    assert text.endswith("- **Sweep**: how\n")


def test_a_report_without_a_profile_or_misses_has_only_tables():
    rows = [Row("Storage", "ping results per machine per day", 250.3, "KiB", target="< 300 KiB", met=True)]
    text = report.render(rows, {}, META)
    assert "**Targets: 1 of 1 met.**" in text and "Missed" not in text
    assert "Where one registration's time goes" not in text
    assert not any(cause in text for cause in report.CAUSES.values())
