"""The benchmark harness's own pieces: statistics, fping parsing, the WebSocket client, the report."""

import asyncio
import math
import struct

import pytest

from monitoring.benchmarks import common, report, sweep, wsclient
from monitoring.benchmarks.common import Row


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


class TestWebSocketClient:
    def test_the_rfc_example_accept_key(self):
        assert wsclient.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    @pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 200_000])
    def test_frames_round_trip_masked_and_unmasked(self, size):
        payload = bytes(i % 251 for i in range(size))

        async def decode(frame):
            reader = asyncio.StreamReader()
            reader.feed_data(frame)
            reader.feed_eof()
            return await wsclient.read_frame(reader)

        masked = wsclient.encode_frame(wsclient.OP_TEXT, payload)
        assert masked[1] & 0x80  # clients must mask
        assert asyncio.run(decode(masked)) == (True, wsclient.OP_TEXT, payload)
        plain = wsclient.encode_frame(wsclient.OP_BINARY, payload, mask=b"")
        assert asyncio.run(decode(plain)) == (True, wsclient.OP_BINARY, payload)

    def test_fragments_pings_and_close(self):
        class Writer:
            def __init__(self):
                self.sent = []

            def write(self, data):
                self.sent.append(data)

        writer = Writer()

        async def talk():
            reader = asyncio.StreamReader()
            for frame in (
                wsclient.encode_frame(wsclient.OP_TEXT, b"hel", mask=b"", fin=False),
                wsclient.encode_frame(wsclient.OP_PING, b"?", mask=b""),
                wsclient.encode_frame(wsclient.OP_CONT, "lo ✓".encode(), mask=b""),
                wsclient.encode_frame(wsclient.OP_CLOSE, struct.pack("!H", 1001) + b"bye", mask=b""),
            ):
                reader.feed_data(frame)
            ws = wsclient.WebSocket(reader, writer)
            assert await ws.recv() == "hello ✓"
            with pytest.raises(wsclient.Closed) as closed:
                await ws.recv()
            return closed.value.code

        assert asyncio.run(talk()) == 1001
        assert writer.sent[0][0] & 0x0F == wsclient.OP_PONG  # the ping was answered


def test_the_report_says_which_targets_are_met():
    rows = [
        Row("Sweep", "one round, all answering: wall", 180.5, "ms", 10_000, reference="fping -i0: 200.0 ms",
            ratio=0.9, target="ratio ≤ 1.0", met=True),
        Row("Push", "commit → fragment received, 50 clients: p95", 140.2, "ms", 10_000, target="< 100 ms",
            met=False, note="a | pipe"),
        Row("Storage", "ping results per machine per day", 250.3, "KiB"),
    ]
    meta = {
        "date": "2026-01-01 00:00 UTC", "duration": 420, "load_before": "0.1 0.1 0.1", "load_after": "1 1 1",
        "max_machines": 10000, "server_note": "defaults", "methods": ["- **Sweep**: how"],
    }
    text = report.render(rows, {"CPU": "Test CPU, 2 logical cores", "kernel": "Linux 6"}, meta)
    assert "# Benchmarks" in text and "2026-01-01 00:00 UTC" in text and "Test CPU, 2 logical cores" in text
    assert "**Targets: 1 of 2 met.** Missed: Push commit → fragment received, 50 clients: p95 at N=10,000." in text
    assert "| Sweep | one round, all answering: wall | 10,000 | 180 | ms | fping -i0: 200.0 ms | 0.90 |" in text
    assert "| **yes** |" in text and "| **no** |" in text and "a \\| pipe" in text
    assert report.CAUSES["Push"] in text and report.CAUSES["Sweep"] not in text
    assert text.endswith("- **Sweep**: how\n")
