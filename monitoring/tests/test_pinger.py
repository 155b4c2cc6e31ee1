"""The pinger against real ICMP, inside throw-away network namespaces, plus its packet matching.

ICMP only ever goes to 127.0.0.0/8, ::1, or hosts of namespaces these tests create (no default route
anywhere). The pinger runs inside the test namespace as a subprocess (`python -m monitoring.pinger`, JSON
out). Namespace tests need root + iproute2 + nftables: they skip locally without them and fail in CI.
"""

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icmplib import ICMPv4Socket, ICMPv6Socket

from conftest import require
from monitoring import netns, pinger
from monitoring.netns import Lab, veth, vxlan
from monitoring.pinger import Pinger, PingerMode, PingerUnavailable, PingResult, probe_privileges

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

# The namespace topology: A (runs the pinger) --veth-- B (the hosts).
A_ADDR, B_ADDR = "10.77.0.1", "10.77.0.2"
REJECTING = "10.77.0.3"  # B answers echo requests to it with ICMP host unreachable (nft reject)
DROPPED = "10.77.0.4"  # B silently drops echo requests to it (nft drop)
OTHER = "10.77.0.5"  # a B address never pinged by the batch under test (source of forged replies)
BLACKHOLED = "10.78.1.1"  # blackhole route in A: sendto fails at once with EINVAL
NO_ROUTE = "10.79.1.1"  # unreachable route in A: sendto fails at once with EHOSTUNREACH
LOCAL_BLACKHOLE = "127.200.0.1"  # blackhole in A's local table (the trick for 127/8)
MODES = ["raw", "unprivileged"]


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def needs_netns():
    require(netns.netns_available(), "needs root and working `ip netns` (Debian: iproute2)")
    require(netns.nft_available(), "needs nftables inside a namespace (Debian: nftables)")
    netns.cleanup_stale_namespaces()  # leftovers of a crashed earlier run; live concurrent runs are kept


def run_pinger(ns, addresses, *, count=2, timeout=1.0, mode=None, user=None, extra=(), check=True):
    """Run `python -m monitoring.pinger` inside ``ns``; the parsed JSON report (or the process)."""
    argv = [PY, "-m", "monitoring.pinger", "--stdin", "-c", str(count), "-W", str(timeout), *extra]
    if mode:
        argv += ["--mode", mode]
    proc = ns.run(*argv, input="\n".join(addresses), cwd=REPO, user=user, check=False, timeout=120)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def last(report):
    return report["batches"][-1]


def allow_unprivileged(ns):
    # ping_group_range is per network namespace: this never touches the host's setting.
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")


@pytest.fixture
def lab(needs_netns):
    with Lab() as lab:
        yield lab


@pytest.fixture(params=MODES)
def pair(request, lab):
    """(A, B, mode): A runs the pinger in ``mode``, B holds the answering/rejecting/dropping addresses."""
    a, b = lab.namespace(), lab.namespace()
    veth(
        a,
        b,
        [f"{A_ADDR}/24", "fd77::1/64"],
        [f"{B_ADDR}/24", f"{REJECTING}/24", f"{DROPPED}/24", f"{OTHER}/24", "fd77::2/64"],
    )
    b.nft(f"""
table inet vxmtest {{
  chain input {{
    type filter hook input priority 0;
    ip daddr {REJECTING} icmp type echo-request reject with icmp type host-unreachable
    ip daddr {DROPPED} icmp type echo-request drop
  }}
}}
""")
    b.sysctl("net.ipv4.icmp_ratelimit", 0)  # every rejected request gets its ICMP error, however often
    a.blackhole("10.78.0.0/16")
    a.add_route("10.79.0.0/16", type="unreachable")
    a.blackhole("127.200.0.0/16", table="local")
    if request.param == "unprivileged":
        allow_unprivileged(a)
    return a, b, request.param


# ---------------------------------------------------------------------------------------------- namespaces


@pytest.mark.netns
class TestInNamespaces:
    def test_an_answering_host_is_ok_with_its_round_trip_time(self, pair):
        a, _b, mode = pair
        report = run_pinger(a, [B_ADDR], count=2, timeout=3.0, mode=mode)
        assert report["mode"] == mode
        batch = last(report)
        result = batch["results"][B_ADDR]
        assert result["ok"] is True and result["failure"] is None
        assert result["loss"] == 0.0
        assert 0 < result["rtt_ms"] < 500
        assert batch["stats"]["sent"] == batch["stats"]["replies"] == 2
        # Everything answered: the batch ends long before its 3 s deadline.
        assert batch["duration_s"] < 1.5, batch

    def test_the_same_host_times_out_once_it_ignores_echo_requests(self, pair):
        a, b, mode = pair
        assert last(run_pinger(a, [B_ADDR], mode=mode))["results"][B_ADDR]["ok"] is True
        b.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        batch = last(run_pinger(a, [B_ADDR], count=2, timeout=1.0, mode=mode))
        result = batch["results"][B_ADDR]
        assert result == {**result, "ok": False, "failure": "timeout", "rtt_ms": None, "loss": 1.0}
        assert "no reply to 2 echo requests within 1 s" in result["detail"]
        # One deadline for the batch: last send (+ one 0.05 s round interval) + timeout.
        assert 1.0 <= batch["duration_s"] < 1.0 + 0.75, batch

    def test_blackholed_and_unroutable_addresses_fail_at_once(self, pair):
        a, _b, mode = pair
        batch = last(run_pinger(a, [BLACKHOLED, NO_ROUTE, LOCAL_BLACKHOLE], count=2, timeout=5.0, mode=mode))
        for address in (BLACKHOLED, NO_ROUTE, LOCAL_BLACKHOLE):
            result = batch["results"][address]
            assert result["ok"] is False and result["failure"] == "unreachable", result
        assert "EINVAL: blackhole route" in batch["results"][BLACKHOLED]["detail"]
        assert "EINVAL: blackhole route" in batch["results"][LOCAL_BLACKHOLE]["detail"]
        assert "EHOSTUNREACH" in batch["results"][NO_ROUTE]["detail"]
        assert batch["stats"]["sent"] == 0 and batch["stats"]["send_errors"] == 6
        assert batch["duration_s"] < 1.0, batch  # nowhere near the 5 s timeout

    def test_an_icmp_destination_unreachable_reply_is_unreachable(self, pair):
        a, _b, mode = pair
        batch = last(run_pinger(a, [REJECTING], count=2, timeout=2.0, mode=mode))
        result = batch["results"][REJECTING]
        assert result["ok"] is False and result["failure"] == "unreachable", result
        assert "Destination host unreachable (ICMP type 3 code 1)" in result["detail"]
        assert batch["stats"]["icmp_errors"] >= 1

    def test_ipv6_loopback_answers(self, pair):
        a, _b, mode = pair
        batch = last(run_pinger(a, ["::1"], mode=mode))
        assert batch["results"]["::1"]["ok"] is True
        assert batch["results"]["::1"]["loss"] == 0.0

    def test_a_mixed_batch_reports_each_kind(self, pair):
        a, _b, mode = pair
        addresses = [
            B_ADDR,
            DROPPED,
            REJECTING,
            BLACKHOLED,
            "::1",
            "0:0:0:0:0:0:0:1",
            "127.0.0.1",
            "fd77::2",
            "not-an-ip",
            B_ADDR,
        ]
        # Two batches on the same sockets; the first one also lets IPv6 neighbour discovery settle.
        report = run_pinger(a, addresses, count=2, timeout=1.0, mode=mode, extra=["--repeat", "2"])
        batch = last(report)
        results = batch["results"]
        assert set(results) == set(addresses)
        expected = {
            B_ADDR: (True, None),
            DROPPED: (False, "timeout"),
            REJECTING: (False, "unreachable"),
            BLACKHOLED: (False, "unreachable"),
            "::1": (True, None),
            "0:0:0:0:0:0:0:1": (True, None),
            "127.0.0.1": (True, None),
            "fd77::2": (True, None),
            "not-an-ip": (False, "error"),
        }
        assert {address: (r["ok"], r["failure"]) for address, r in results.items()} == expected
        for address, result in results.items():
            assert result["address"] == address
            if result["ok"]:
                assert result["loss"] == 0.0 and result["rtt_ms"] >= 0
            else:
                assert result["rtt_ms"] is None and result["loss"] == 1.0
        assert 1.0 <= batch["duration_s"] < 1.75, batch  # the dropped host holds the batch to its deadline
        for earlier in report["batches"]:
            assert earlier["results"][B_ADDR]["ok"] is True

    def test_stray_and_forged_replies_are_ignored(self, pair):
        """Another pinger shares the namespace, and B forges echo replies for our silent target."""
        a, b, mode = pair
        ident, first_seq = 4660, 1000
        forger = b.popen(
            PY, "-c", FORGER, DROPPED, OTHER, A_ADDR, str(ident), str(first_seq), stdout=subprocess.PIPE, text=True
        )
        assert forger.stdout.readline().strip() == "ready"
        # A concurrent "ping": the same CLI with another identifier and the SAME sequence numbers.
        other = a.popen(
            PY,
            "-m",
            "monitoring.pinger",
            "-c",
            "2",
            "-W",
            "1",
            "--repeat",
            "3",
            "--ident",
            str(ident + 1),
            "--sequence-start",
            str(first_seq),
            "--mode",
            mode,
            B_ADDR,
            DROPPED,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)
        batch = last(
            run_pinger(
                a,
                [B_ADDR, DROPPED],
                count=2,
                timeout=1.5,
                mode=mode,
                extra=["--ident", str(ident), "--sequence-start", str(first_seq)],
            )
        )
        other_report = json.loads(other.communicate(timeout=30)[0])
        forger.kill()
        results = batch["results"]
        assert results[DROPPED]["ok"] is False and results[DROPPED]["failure"] == "timeout", results
        assert results[B_ADDR]["ok"] is True and results[B_ADDR]["loss"] == 0.0
        assert batch["stats"]["replies"] == 2  # exactly our own two replies from B, nothing else
        assert batch["stats"]["ignored"] > 0  # forged (and, on a raw socket, the other pinger's) replies
        for other_batch in other_report["batches"]:
            assert other_batch["results"][B_ADDR]["ok"] is True
            assert other_batch["results"][DROPPED]["ok"] is False

    def test_unprivileged_ping_sockets_for_an_ordinary_user(self, lab):
        a, b = lab.namespace(), lab.namespace()
        veth(a, b, f"{A_ADDR}/24", f"{B_ADDR}/24")
        allow_unprivileged(a)
        report = run_pinger(a, [B_ADDR, "::1"], user="nobody")
        assert report["mode"] == "unprivileged"
        assert all(r["ok"] for r in last(report)["results"].values())
        # Take the permission away again: one clear line says how to grant it.
        a.sysctl("net.ipv4.ping_group_range", "1 0")
        proc = run_pinger(a, [B_ADDR], user="nobody", check=False)
        assert proc.returncode == 2
        message = proc.stderr.strip()
        assert "\n" not in message
        assert "net.ipv4.ping_group_range" in message and "setcap cap_net_raw+ep" in message and "root" in message
        # root in the same namespace falls back to raw sockets
        assert json.loads(a.run(PY, "-m", "monitoring.pinger", "--probe", cwd=REPO).stdout) == {"mode": "raw"}

    def test_pinging_across_a_vxlan_overlay(self, lab):
        a, b = lab.namespace(), lab.namespace()
        dev_a, dev_b = veth(a, b, "192.168.77.1/24", "192.168.77.2/24")
        vxlan(a, 100, local="192.168.77.1", remote="192.168.77.2", dev=dev_a, address="10.100.0.1/24")
        vxlan(b, 100, local="192.168.77.2", remote="192.168.77.1", dev=dev_b, address="10.100.0.2/24")
        result = last(run_pinger(a, ["10.100.0.2"]))["results"]["10.100.0.2"]
        assert result["ok"] is True and result["loss"] == 0.0

    def test_namespaces_are_removed_even_when_the_body_fails(self, needs_netns):
        names = []
        with pytest.raises(RuntimeError), Lab() as lab:
            a, b = lab.namespace(), lab.namespace()
            veth(a, b, "10.9.0.1/30", "10.9.0.2/30")
            a.popen("sleep", "60")
            names = [a.name, b.name]
            raise RuntimeError("boom")
        assert names and not set(names) & set(netns.list_namespaces())

    def test_leftovers_of_a_crashed_run_are_cleaned_up_but_live_ones_kept(self, needs_netns):
        crashed = subprocess.Popen(
            [
                PY,
                "-c",
                "import time; from monitoring.netns import NetNS; print(NetNS().create().name, flush=True);"
                " time.sleep(60)",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            leftover = crashed.stdout.readline().strip()
        finally:
            crashed.kill()  # SIGKILL: no teardown ran
            crashed.wait()
        assert leftover in netns.list_namespaces()
        with netns.NetNS() as live:
            removed = netns.cleanup_stale_namespaces()
            assert leftover in removed and live.name not in removed
            assert leftover not in netns.list_namespaces() and live.exists
        assert not live.exists

    def test_no_default_route_is_ever_added(self, lab):
        a = lab.namespace()
        for destination in ("default", "0.0.0.0/0", "::/0"):
            with pytest.raises(ValueError):
                a.add_route(destination, type="blackhole")
        with pytest.raises(ValueError):
            a.sysctl("net.core.rmem_max", 1)  # not per-namespace: would change the host


# A forger for B: echo replies "from" the silent target and from another address, covering our sequence
# numbers, with the wrong identifier, or the right identifier but not our payload.
FORGER = r"""
import random, socket, struct, sys, time
silent, other, dest, ident, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def checksum(data):
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def reply(ident, seq, payload):
    header = struct.pack("!BBHHH", 0, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 0, 0, checksum(header + payload), ident, seq) + payload

socks = {}
for source in (silent, other):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.bind((source, 0))
    socks[source] = s
packets = []
for seq in range(first - 5, first + 10):
    packets.append((silent, reply(ident + 7, seq, b"vxlanmgr" + random.randbytes(8))))  # wrong identifier
    packets.append((silent, reply(ident, seq, b"vxlanmgr" + random.randbytes(8))))  # not our payload
    packets.append((other, reply(ident, seq, b"vxlanmgr" + random.randbytes(8))))  # wrong source
end = time.monotonic() + 8
first_round = True
while time.monotonic() < end:
    for source, packet in packets:
        socks[source].sendto(packet, (dest, 0))
    if first_round:
        print("ready", flush=True)
        first_round = False
    time.sleep(0.01)
"""


# ---------------------------------------------------------------------------------------------- loopback


def _pinger_or_skip() -> Pinger:
    try:
        return Pinger()
    except PingerUnavailable as exc:
        require(False, f"needs ICMP privileges: {exc}")
        raise


class TestLoopbackFromTheTestProcess:
    """Directly from the test process, loopback addresses only (always safe)."""

    async def test_loopback_addresses_answer_and_the_sockets_are_reused(self):
        with _pinger_or_skip() as p:
            fds = {version: p._channels[version].fd for version in p._channels}
            targets = ["127.0.0.1", "127.0.0.2"] + (["::1"] if 6 in fds else [])
            for _ in range(3):
                results = await p.ping_batch(targets, count=2, timeout=2.0)
                assert list(results) == targets
                for address, result in results.items():
                    assert isinstance(result, PingResult)
                    assert result.ok and result.failure is None and result.loss == 0.0, result
                    assert result.rtt_ms is not None and 0 <= result.rtt_ms < 1000
                    assert result.address == address
                assert p.last_stats["replies"] == 2 * len(targets)
            assert {version: p._channels[version].fd for version in p._channels} == fds
        assert p.closed
        with pytest.raises(RuntimeError):
            await p.ping_batch(["127.0.0.1"])

    async def test_overlapping_batches_share_the_sockets(self):
        with _pinger_or_skip() as p:
            first, second = await asyncio.gather(
                p.ping_batch([f"127.0.1.{i}" for i in range(1, 51)], count=2, timeout=2.0),
                p.ping_batch([f"127.0.1.{i}" for i in range(25, 76)], count=2, timeout=2.0),
            )
            assert all(r.ok and r.loss == 0.0 for r in first.values())
            assert all(r.ok and r.loss == 0.0 for r in second.values())
            assert not p._pending and not p._active

    async def test_the_event_loop_keeps_running_during_a_batch(self):
        with _pinger_or_skip() as p:
            ticks = []

            async def ticker():
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.002)

            task = asyncio.create_task(ticker())
            try:
                started = time.monotonic()
                targets = [f"127.0.{i // 250 + 2}.{i % 250 + 1}" for i in range(4000)]
                results = await p.ping_batch(targets, 2, 2.0, interval=0)  # only the send steps yield
                elapsed = time.monotonic() - started
            finally:
                task.cancel()
            assert all(r.ok for r in results.values())
            inside = [t for t in ticks if started <= t <= started + elapsed]
            assert len(inside) >= 5, (len(inside), elapsed)  # the loop ran many times while pinging

    async def test_bad_arguments(self):
        with _pinger_or_skip() as p:
            with pytest.raises(ValueError):
                await p.ping_batch(["127.0.0.1"], count=0)
            with pytest.raises(ValueError):
                await p.ping_batch(["127.0.0.1"], timeout=0)
            assert await p.ping_batch([]) == {}
            results = await p.ping_batch(["nonsense", "::", "0.0.0.0", "127.0.0.1"], count=1, timeout=2)
            assert [(r.ok, r.failure) for r in results.values()] == [(False, "error")] * 3 + [(True, None)]

    async def test_the_one_shot_helper(self):
        _pinger_or_skip().close()
        results = await pinger.ping_batch(["127.0.0.1"], 1, 2.0)
        assert results["127.0.0.1"].ok


# ---------------------------------------------------------------------------------------------- privileges


def test_probe_raises_one_clear_line_when_nothing_is_allowed(monkeypatch):
    monkeypatch.setattr(pinger, "_try_open", lambda mode: "Permission denied")
    with pytest.raises(PingerUnavailable) as info:
        probe_privileges()
    message = str(info.value)
    assert "\n" not in message
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in message
    assert f"setcap cap_net_raw+ep {os.path.realpath(sys.executable)}" in message
    assert "run as root" in message
    with pytest.raises(PingerUnavailable, match="raw ICMP sockets are not available"):
        probe_privileges("raw")


def test_probe_prefers_unprivileged_sockets(monkeypatch):
    monkeypatch.setattr(pinger, "_try_open", lambda mode: None)
    assert probe_privileges() is PingerMode.UNPRIVILEGED
    monkeypatch.setattr(pinger, "_try_open", lambda mode: None if mode is PingerMode.RAW else "denied")
    assert probe_privileges() is PingerMode.RAW


# ---------------------------------------------------------------------------------------------- matching
# Packets are fed straight to the decoder and the matcher: no socket, no privilege, no traffic.


def fake_channel(version: int, raw: bool, ident: int) -> pinger._Channel:
    icmp = (ICMPv4Socket if version == 4 else ICMPv6Socket).__new__(ICMPv4Socket if version == 4 else ICMPv6Socket)
    icmp._sock, icmp._address, icmp._privileged = None, None, raw
    channel = pinger._Channel.__new__(pinger._Channel)
    channel.version, channel.raw, channel.icmp, channel.ident = version, raw, icmp, ident
    channel.echo_reply = 0 if version == 4 else 129
    channel.error_types = {3, 11, 12} if version == 4 else {1, 2, 3, 4}
    return channel


def fake_pinger(*channels) -> Pinger:
    p = Pinger.__new__(Pinger)
    p._payload = b"vxlanmgr" + b"T" * 8
    p._pending, p.ignored = {}, 0
    p._channels = {c.version: c for c in channels}
    return p


def icmp(icmp_type, ident, seq, payload=b""):
    return struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + payload


def ipv4(src, dst, body, proto=1):
    return (
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst)
        )
        + body
    )


def ipv6(src, dst, body, next_header=58):
    return (
        struct.pack("!IHBB", 6 << 28, len(body), next_header, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + body
    )


class TestMatching:
    def setup_method(self):
        self.v4 = fake_channel(4, raw=True, ident=4660)
        self.v6 = fake_channel(6, raw=True, ident=4660)
        self.p = fake_pinger(self.v4, self.v6)
        self.batch = pinger._Batch()
        self.target = pinger._Target("10.0.0.7", "10.0.0.7", self.v4, ("10.0.0.7", 0), self.batch)
        self.target6 = pinger._Target("fd00::7", "fd00::7", self.v6, ("fd00::7", 0, 0, 0), self.batch)
        self.p._pending = {("10.0.0.7", 100): (self.target, 1_000_000), ("fd00::7", 100): (self.target6, 1_000_000)}
        self.batch.outstanding = 2
        self.batch.sending = False

    def feed(self, channel, packet, source, rx_ns=3_000_000):
        event = channel.decode(packet, source)
        if event is not None:
            self.p._dispatch(channel, event, rx_ns)
        return event

    def test_a_matching_reply_resolves_its_request(self):
        good = ipv4("10.0.0.7", "10.0.0.1", icmp(0, 4660, 100, self.p._payload))
        assert self.feed(self.v4, good, "10.0.0.7") is not None
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_000_000)
        assert ("10.0.0.7", 100) not in self.p._pending and self.batch.outstanding == 1
        self.feed(self.v4, good, "10.0.0.7")  # a duplicate changes nothing
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_000_000) and self.p.ignored == 1

    @pytest.mark.parametrize("case", ["wrong id", "wrong source", "wrong sequence", "wrong payload", "request"])
    def test_anything_else_is_ignored(self, case):
        ident, source, seq, payload, kind = 4660, "10.0.0.7", 100, self.p._payload, 0
        if case == "wrong id":
            ident = 4661
        elif case == "wrong source":
            source = "10.0.0.8"
        elif case == "wrong sequence":
            seq = 101
        elif case == "wrong payload":
            payload = b"vxlanmgr" + b"X" * 8
        else:
            kind = 8  # an echo REQUEST to that address (raw sockets see those too)
        self.feed(self.v4, ipv4(source, "10.0.0.1", icmp(kind, ident, seq, payload)), source)
        assert self.target.replies == 0 and self.batch.outstanding == 2

    def test_icmp_errors_quoting_our_request_make_it_unreachable(self):
        quoted = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100, self.p._payload))
        error = ipv4("192.0.2.1", "10.0.0.1", struct.pack("!BBHI", 3, 1, 0, 0) + quoted)
        event = self.feed(self.v4, error, "192.0.2.1")
        assert event.kind == "icmp_error" and event.address == "10.0.0.7"
        assert self.target.errors == [
            ("unreachable", "Destination host unreachable (ICMP type 3 code 1) from 192.0.2.1")
        ]
        # errors quoting someone's UDP datagram, or an echo request to another host, are not ours
        udp = ipv4("10.0.0.1", "10.0.0.7", struct.pack("!HHHH", 4660, 100, 8, 0), proto=17)
        assert (
            self.v4.decode(ipv4("192.0.2.1", "10.0.0.1", struct.pack("!BBHI", 3, 3, 0, 0) + udp), "192.0.2.1") is None
        )
        elsewhere = ipv4("10.0.0.1", "10.0.0.9", icmp(8, 4660, 100))
        self.feed(self.v4, ipv4("192.0.2.1", "10.0.0.1", struct.pack("!BBHI", 11, 0, 0, 0) + elsewhere), "x")
        assert len(self.target.errors) == 1

    def test_ipv6_replies_and_errors(self):
        self.feed(self.v6, icmp(129, 4660, 100, self.p._payload), "fd00:0::7")
        assert (self.target6.replies, self.target6.rtt_ns) == (1, 2_000_000)
        self.p._pending[("fd00::7", 101)] = (self.target6, 0)
        quoted = ipv6("fd00::1", "fd00::7", icmp(128, 4660, 101))
        event = self.feed(self.v6, struct.pack("!BBHI", 1, 3, 0, 0) + quoted, "fd00::99")
        assert event.kind == "icmp_error" and self.target6.errors[0][0] == "unreachable"
        assert "Address unreachable" in self.target6.errors[0][1]

    def test_ping_socket_error_queue_entries(self):
        channel = fake_channel(4, raw=False, ident=4660)
        extended = struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0)  # EHOSTUNREACH, from ICMP, type 3 code 1
        offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("10.0.0.254"))
        event = channel.decode_queued_error(icmp(8, 4660, 100), [(0, 11, extended + offender)], ("10.0.0.7", 0))
        assert (event.kind, event.address, event.ident, event.sequence) == ("icmp_error", "10.0.0.7", 4660, 100)
        assert event.detail == "Destination host unreachable (ICMP type 3 code 1) from 10.0.0.254"
        local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 0, 0)  # EMSGSIZE, origin local
        event = channel.decode_queued_error(icmp(8, 4660, 100), [(0, 11, local)], ("10.0.0.7", 0))
        assert event.kind == "local_error" and "EMSGSIZE" in event.detail

    @given(st.binary(max_size=120), st.booleans(), st.sampled_from([4, 6]))
    def test_the_decoder_never_raises_on_garbage(self, data, raw, version):
        channel = fake_channel(version, raw=raw, ident=4660)
        event = channel.decode(data, "10.0.0.7" if version == 4 else "fd00::7")
        assert event is None or isinstance(event, pinger._Event)
        destination = ("10.0.0.7", 0) if version == 4 else ("fd00::7", 0, 0, 0)
        event = channel.decode_queued_error(data, [(0, 11, data), (41, 25, data)], destination)
        assert event is None or isinstance(event, pinger._Event)


class FakeSock:
    """Stands in for a channel's socket: hands out queued packets, records what is sent."""

    def __init__(self, packets=()):
        self.queue = list(packets)
        self.sent = []

    def fileno(self):
        return 99

    def recvmsg(self, bufsize, ancbufsize, flags=0):
        if flags or not self.queue:
            raise BlockingIOError
        data, addr, rx_ns = self.queue.pop(0)
        anc = [] if rx_ns is None else [(socket.SOL_SOCKET, 35, struct.pack("@ll", *divmod(rx_ns, 1_000_000_000)))]
        return data[:bufsize], anc, 0, addr

    def sendto(self, data, sockaddr):
        self.sent.append((bytes(data), sockaddr))
        return len(data)


class TestFastPath:
    """The hot paths (template packets on the way out, replies decoded without icmplib on the way in) must
    agree with icmplib's packets and with the decoder + matcher above."""

    def setup_method(self):
        self.v4 = fake_channel(4, raw=True, ident=4660)
        self.v6 = fake_channel(6, raw=True, ident=4660)
        self.dgram = fake_channel(4, raw=False, ident=4660)
        self.p = fake_pinger(self.v4, self.v6)
        self.batch = pinger._Batch()
        self.batch.sending = False
        self.target = pinger._Target("10.0.0.7", "10.0.0.7", self.v4, ("10.0.0.7", 0), self.batch)

    def expect(self, target, channel, seq, tx_ns=1_000_000):
        target.channel = channel
        self.p._pending[(target.key, seq)] = (target, tx_ns)
        self.batch.outstanding += 1

    def read(self, channel, *packets):
        channel.sock = FakeSock(packets)
        return self.p._read(channel, 100)

    @pytest.mark.parametrize("version", [4, 6])
    def test_the_template_patched_per_sequence_is_icmplibs_packet(self, version):
        channel = self.v4 if version == 4 else self.v6
        packet, partial = channel.template(self.p._payload)
        for seq in [*range(0, 70_000, 7), 0xFFFF, 0xFFFE, 1]:
            seq &= 0xFFFF
            total = partial + seq
            pinger._ECHO_PATCH.pack_into(packet, 2, ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF, 4660, seq)
            assert bytes(packet) == channel.packet(seq, self.p._payload), seq

    async def test_the_send_loop_sends_icmplibs_packets_and_records_each_request(self):
        self.v4.sock, self.v6.sock = FakeSock(), FakeSock()
        self.p._next_sequence, self.p._sequence_start = {"10.0.0.9": 0xFFFF}, 500
        targets = [pinger._Target(a, a, self.v4, (a, 0), self.batch) for a in ("10.0.0.7", "10.0.0.8", "10.0.0.9")]
        self.batch.sending = True
        await self.p._send_rounds(self.batch, targets, 2, 0.0, asyncio.get_running_loop())
        sequences = {"10.0.0.7": [500, 501], "10.0.0.8": [500, 501], "10.0.0.9": [0xFFFF, 0]}
        expected = [
            (self.v4.packet(sequences[t.key][k], self.p._payload), (t.key, 0)) for k in range(2) for t in targets
        ]
        assert self.v4.sock.sent == expected
        assert set(self.p._pending) == {(a, s) for a, seqs in sequences.items() for s in seqs}
        assert self.batch.sent == self.batch.outstanding == 6
        assert self.p._next_sequence == {"10.0.0.7": 502, "10.0.0.8": 502, "10.0.0.9": 1}
        self.p._active, self.p._loop = 1, None
        self.p._end(self.batch, targets, 2)  # unanswered requests are forgotten at the end
        assert self.p._pending == {}

    def test_a_matching_reply_resolves_its_request_with_the_kernel_timestamp(self):
        self.expect(self.target, self.v4, 100)
        good = ipv4("10.0.0.7", "10.0.0.1", icmp(0, 4660, 100, self.p._payload))
        assert self.read(self.v4, (good, ("10.0.0.7", 0), 3_500_000)) == 1
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_500_000)
        assert self.p._pending == {} and self.batch.outstanding == 0 and self.batch.replies == 1
        assert self.batch.done.is_set()
        self.read(self.v4, (good, ("10.0.0.7", 0), 4_000_000))  # a duplicate changes nothing
        assert (self.target.replies, self.p.ignored) == (1, 1)

    @pytest.mark.parametrize(
        "case", ["wrong id", "wrong source", "wrong sequence", "wrong payload", "short payload", "request", "channel"]
    )
    def test_anything_else_is_ignored(self, case):
        self.expect(self.target, self.v4, 100)
        ident, source, seq, payload, kind, channel = 4660, "10.0.0.7", 100, self.p._payload, 0, self.v4
        if case == "wrong id":
            ident = 4661
        elif case == "wrong source":
            source = "10.0.0.8"
        elif case == "wrong sequence":
            seq = 101
        elif case == "wrong payload":
            payload = b"vxlanmgr" + b"X" * 8
        elif case == "short payload":
            payload = self.p._payload[:-1]
        elif case == "request":
            kind = 8
        else:  # the right packet, but on another socket than the request went out on
            self.expect(self.target, self.dgram, 100)
        packet = icmp(kind, ident, seq, payload)
        if channel is self.v4:
            packet = ipv4(source, "10.0.0.1", packet)
        self.read(self.v4, (packet, (source, 0), 3_000_000))
        assert self.target.replies == 0 and self.batch.outstanding == 2 - (case != "channel")
        assert ("10.0.0.7", 100) in self.p._pending

    def test_ip_options_icmp_errors_and_garbage_take_the_icmplib_path(self):
        self.expect(self.target, self.v4, 100)
        self.expect(self.target, self.v4, 101)
        reply = icmp(0, 4660, 100, self.p._payload)
        with_options = bytearray(ipv4("10.0.0.7", "10.0.0.1", b"\1\1\1\0" + reply))
        with_options[0] = 0x46  # a 24-byte header: four bytes of options (NOPs, end of list)
        quoted = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 101, self.p._payload))
        error = ipv4("192.0.2.1", "10.0.0.1", struct.pack("!BBHI", 3, 1, 0, 0) + quoted)
        n = self.read(
            self.v4,
            (b"\x45garbage", ("10.0.0.7", 0), None),
            (bytes(with_options), ("10.0.0.7", 0), 3_000_000),
            (error, ("192.0.2.1", 0), None),
        )
        assert n == 3
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_000_000)
        unreachable = "Destination host unreachable (ICMP type 3 code 1) from 192.0.2.1"
        assert self.target.errors == [("unreachable", unreachable)]
        assert self.p._pending == {} and self.batch.outstanding == 0

    def test_ping_socket_and_ipv6_replies(self):
        self.p._channels[4] = self.dgram
        self.expect(self.target, self.dgram, 100)
        target6 = pinger._Target("fd00::7", "fd00::7", self.v6, ("fd00::7", 0, 0, 0), self.batch)
        self.expect(target6, self.v6, 7)
        self.dgram.sock = FakeSock()
        self.read(self.dgram, (icmp(0, 4660, 100, self.p._payload), ("10.0.0.7", 0), 1_250_000))
        self.read(self.v6, (icmp(129, 4660, 7, self.p._payload), ("fd00:0::7", 0, 0, 0), None))
        assert (self.target.replies, self.target.rtt_ns) == (1, 250_000)
        assert target6.replies == 1 and target6.rtt_ns > 0  # no kernel timestamp: the time it was read
        assert self.p._pending == {}

    def test_results(self):
        make = pinger._result_maker(2, 1.0)
        self.target.replies, self.target.rtt_ns = 2, 2_469_000
        assert make(self.target) == PingResult("10.0.0.7", True, 1.235, 0.0, None, "2/2 replies, rtt avg 1.235 ms")
        self.target.replies, self.target.rtt_ns = 1, 1_000_400
        assert make(self.target) == PingResult("10.0.0.7", True, 1.0, 0.5, None, "1/2 replies, rtt avg 1.000 ms")
        other = pinger._Target("10.0.0.8", "10.0.0.8", self.v4, ("10.0.0.8", 0), self.batch)
        assert make(other) == PingResult(
            "10.0.0.8", False, None, 1.0, "timeout", "no reply to 2 echo requests within 1 s"
        )
        other.fail("error", "local error")
        other.fail("unreachable", "gone")
        assert make(other).failure == "unreachable" and make(other).detail == "gone"
        with pytest.raises(AttributeError):
            make(other).ok = True


def test_send_errors_are_classified():
    import errno as e

    assert pinger._send_error(OSError(e.EINVAL, "x"))[0] == "unreachable"
    assert pinger._send_error(OSError(e.EHOSTUNREACH, "x"))[0] == "unreachable"
    assert pinger._send_error(OSError(e.ENETUNREACH, "x"))[0] == "unreachable"
    assert pinger._send_error(OSError(e.EPERM, "x"))[0] == "error"
    assert pinger._send_error(OSError(e.EACCES, "x"))[0] == "error"
    assert pinger._send_error(OSError(e.EADDRNOTAVAIL, "x"))[0] == "error"


def test_ping_result_is_a_frozen_dataclass():
    result = PingResult("10.0.0.1", True, 0.5, 0.0, None, "2/2 replies")
    with pytest.raises(AttributeError):
        result.ok = False
    assert result.as_dict() == {
        "address": "10.0.0.1",
        "ok": True,
        "rtt_ms": 0.5,
        "loss": 0.0,
        "failure": None,
        "detail": "2/2 replies",
    }
