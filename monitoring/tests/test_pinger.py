"""The pinger against real ICMP, inside throw-away network namespaces, plus its codec and packet matching.

ICMP only ever goes to 127.0.0.0/8, ::1, or hosts of namespaces these tests create (no default route
anywhere). The pinger runs inside the test namespace as a subprocess (`python -m monitoring.icmp`, JSON
out). Namespace tests need root + iproute2 + nftables: they skip locally without them and fail in CI.
"""

import asyncio
import errno
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

from conftest import require
from lab import netns
from lab.netns import Lab, NetNS, veth, vxlan
from monitoring.icmp import (
    Pinger,
    PingerMode,
    PingerUnavailable,
    PingResult,
    codec,
    ping_batch,
    probe_privileges,
    sockets,
)
from monitoring.icmp.batch import Batch, Target
from monitoring.icmp.results import result_maker, send_error
from monitoring.icmp.sockets import Channel

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
    """Run `python -m monitoring.icmp` inside ``ns``; the parsed JSON report (or the process)."""
    argv = [PY, "-m", "monitoring.icmp", "--stdin", "-c", str(count), "-W", str(timeout), *extra]
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
            "monitoring.icmp",
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
        assert json.loads(a.run(PY, "-m", "monitoring.icmp", "--probe", cwd=REPO).stdout) == {"mode": "raw"}

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
                "import time; from lab.netns import NetNS; print(NetNS().create().name, flush=True); time.sleep(60)",
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
        results = await ping_batch(["127.0.0.1"], 1, 2.0)
        assert results["127.0.0.1"].ok


# ---------------------------------------------------------------------------------------------- privileges


def test_probe_raises_one_clear_line_when_nothing_is_allowed(monkeypatch):
    monkeypatch.setattr(sockets, "_try_open", lambda mode: "Permission denied")
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
    monkeypatch.setattr(sockets, "_try_open", lambda mode: None)
    assert probe_privileges() is PingerMode.UNPRIVILEGED
    monkeypatch.setattr(sockets, "_try_open", lambda mode: None if mode is PingerMode.RAW else "denied")
    assert probe_privileges() is PingerMode.RAW


# ---------------------------------------------------------------------------------------------- codec
# Packets are built and decoded in memory: no socket, no privilege, no traffic.

PAYLOAD = b"vxlanmgr" + b"T" * 8


def reference_checksum(data: bytes) -> int:
    """RFC 1071 as icmplib computes it: byte pairs, the carry folded back after every addition."""
    total = 0
    data += b"\0"
    for i in range(0, len(data) - 1, 2):
        total += (data[i] << 8) + data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp(icmp_type, ident, seq, payload=b""):
    return struct.pack("!BBHHH", icmp_type, 0, 0, ident, seq) + payload


def icmp_error(icmp_type, code, quoted):
    return struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted


def ipv4(src, dst, body, proto=1, options=b""):
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45 + len(options) // 4,
        0,
        20 + len(options) + len(body),
        0,
        0,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + options + body


def ipv6(src, dst, body, next_header=58):
    return (
        struct.pack("!IHBB", 6 << 28, len(body), next_header, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + body
    )


class TestEncoding:
    @given(st.binary(max_size=200))
    def test_the_checksum_is_rfc_1071(self, data):
        value = codec.checksum(data)
        assert value == reference_checksum(data)
        padded = data + b"\0" * (len(data) % 2)
        assert reference_checksum(padded + value.to_bytes(2, "big")) == 0  # data carrying its checksum verifies

    @given(st.sampled_from([4, 6]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
    def test_a_request_is_its_header_and_payload_with_a_valid_checksum(self, version, ident, sequence, payload):
        packet = codec.echo_request(version, ident, sequence, payload)
        assert struct.unpack_from("!BBxxHH", packet) == (codec.ECHO_REQUEST[version], 0, ident, sequence)
        assert packet[8:] == payload and reference_checksum(packet) == 0
        template, partial = codec.echo_template(version, ident, payload)
        codec.stamp(template, partial, ident, sequence)
        assert template == packet

    @pytest.mark.parametrize("version", [4, 6])
    def test_every_sequence_number_stamped_on_the_template_is_the_request_built_in_full(self, version):
        packet, partial = codec.echo_template(version, 4660, PAYLOAD)
        for sequence in range(0x10000):
            codec.stamp(packet, partial, 4660, sequence)
            assert packet == codec.echo_request(version, 4660, sequence, PAYLOAD), sequence


class TestDecoding:
    raw4 = staticmethod(codec.make_decoder(4, True, PAYLOAD))
    dgram4 = staticmethod(codec.make_decoder(4, False, PAYLOAD))
    raw6 = staticmethod(codec.make_decoder(6, True, PAYLOAD))
    dgram6 = staticmethod(codec.make_decoder(6, False, PAYLOAD))

    def test_a_reply_decodes_the_same_from_every_kind_of_socket(self):
        reply = icmp(0, 4660, 100, PAYLOAD + b"more")
        expected = (codec.REPLY, ("10.0.0.7", 100), 4660, None)
        assert self.raw4(ipv4("10.0.0.7", "10.0.0.1", reply), "10.0.0.7") == expected
        with_options = ipv4("10.0.0.7", "10.0.0.1", reply, options=b"\1\1\1\0")  # 4 bytes of IP options
        assert self.raw4(with_options, "10.0.0.7") == expected
        assert self.dgram4(reply, "10.0.0.7") == expected
        reply6 = icmp(129, 4660, 100, PAYLOAD)
        expected6 = (codec.REPLY, ("fd00::7", 100), 4660, None)  # the address normalised
        assert self.raw6(reply6, "fd00:0::7") == expected6
        assert self.dgram6(reply6, "fd00:0:0::7%eth0") == expected6

    @pytest.mark.parametrize("payload", [b"vxlanmgr" + b"X" * 8, PAYLOAD[:-1], b""])
    @pytest.mark.parametrize("options", [b"", b"\1\1\1\0"])
    def test_a_reply_without_our_payload_matches_no_request(self, payload, options):
        packet = ipv4("10.0.0.7", "10.0.0.1", icmp(0, 4660, 100, payload), options=options)
        assert self.raw4(packet, "10.0.0.7") == (codec.REPLY, ("10.0.0.7", 100), codec.NOT_OURS, None)

    def test_requests_and_other_messages_are_not_events(self):
        assert self.raw4(ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100, PAYLOAD)), "10.0.0.1") is None
        assert self.raw6(icmp(128, 4660, 100, PAYLOAD), "fd00::1") is None
        assert self.raw4(ipv4("10.0.0.7", "10.0.0.1", icmp(14, 4660, 100)), "10.0.0.7") is None  # timestamp
        # a ping socket gets its ICMP errors through the error queue, never in the normal one
        quoted = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100, PAYLOAD))
        assert self.dgram4(icmp_error(3, 1, quoted), "192.0.2.1") is None

    def test_an_error_without_our_payload_is_a_forgery(self):
        # Identifier and sequence are visible to any host that sees our requests; the payload token is not.
        forged = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100, b"vxlanmgr" + b"\0" * 8))
        assert self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 1, forged)), "192.0.2.1") is None
        truncated = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100))
        assert self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 1, truncated)), "192.0.2.1") is None
        forged6 = ipv6("fd00::1", "fd00::7", icmp(128, 4660, 101, b"vxlanmgr" + b"\1" * 8))
        assert self.raw6(icmp_error(1, 3, forged6), "fd00::99") is None
        extended = struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0)
        queued = icmp(8, 4660, 100, b"vxlanmgr" + b"\0" * 8)
        assert codec.decode_queued_error(4, PAYLOAD, queued, [(0, 11, extended)], ("10.0.0.7", 0)) is None

    def test_icmp_errors_quoting_our_request(self):
        quoted = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 100, PAYLOAD))
        error = ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 1, quoted))
        detail = "Destination host unreachable (ICMP type 3 code 1) from 192.0.2.1"
        assert self.raw4(error, "192.0.2.1") == (codec.ICMP_ERROR, ("10.0.0.7", 100), 4660, detail)
        quoted_with_options = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 101, PAYLOAD), options=b"\1\1\1\0")
        event = self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(11, 0, quoted_with_options)), "192.0.2.1")
        assert event[:3] == (codec.ICMP_ERROR, ("10.0.0.7", 101), 4660) and "(ICMP type 11 code 0)" in event[3]
        event = self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(12, 0, quoted)), "192.0.2.1")
        assert event[3] == "Parameter problem (ICMP type 12 code 0) from 192.0.2.1"
        # errors about someone's UDP datagram, about a reply, or too short to quote an ICMP header: not ours
        udp = ipv4("10.0.0.1", "10.0.0.7", struct.pack("!HHHH", 4660, 100, 8, 0), proto=17)
        assert self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 3, udp)), "192.0.2.1") is None
        about_reply = ipv4("10.0.0.1", "10.0.0.7", icmp(0, 4660, 100))
        assert self.raw4(ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 3, about_reply)), "192.0.2.1") is None
        assert self.raw4(error[: 20 + 8 + 20 + 7], "192.0.2.1") is None

    def test_icmpv6_errors_quoting_our_request(self):
        quoted = ipv6("fd00::1", "fd00::7", icmp(128, 4660, 101, PAYLOAD))
        detail = "Address unreachable (ICMP type 1 code 3) from fd00::99"
        assert self.raw6(icmp_error(1, 3, quoted), "fd00::99") == (codec.ICMP_ERROR, ("fd00::7", 101), 4660, detail)
        assert self.raw6(icmp_error(2, 0, quoted), "fd00::99")[3] == "Packet too big (ICMP type 2 code 0) from fd00::99"
        assert self.raw6(icmp_error(4, 1, quoted), "fd00::99")[3].startswith("Parameter problem (ICMP type 4 code 1)")
        udp = ipv6("fd00::1", "fd00::7", struct.pack("!HHHH", 4660, 101, 8, 0), next_header=17)
        assert self.raw6(icmp_error(1, 4, udp), "fd00::99") is None

    def test_ping_socket_error_queue_entries(self):
        request = icmp(8, 4660, 100, PAYLOAD)  # the error queue hands back our own request
        extended = struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0)  # EHOSTUNREACH, from ICMP, type 3 code 1
        offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("10.0.0.254"))
        event = codec.decode_queued_error(4, PAYLOAD, request, [(0, 11, extended + offender)], ("10.0.0.7", 0))
        detail = "Destination host unreachable (ICMP type 3 code 1) from 10.0.0.254"
        assert event == (codec.ICMP_ERROR, ("10.0.0.7", 100), 4660, detail)
        local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 0, 0)  # EMSGSIZE, origin local
        event = codec.decode_queued_error(4, PAYLOAD, request, [(0, 11, local)], ("10.0.0.7", 0))
        assert event[0] == codec.LOCAL_ERROR and event[3] == "local error: Message too long (EMSGSIZE)"
        extended6 = struct.pack("=IBBBBII", 113, 3, 1, 3, 0, 0, 0)  # from ICMPv6, type 1 code 3
        offender6 = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, "fd00::fe"), 0)
        request6 = icmp(128, 4660, 100, PAYLOAD)
        anc6 = [(41, 25, extended6 + offender6)]
        event = codec.decode_queued_error(6, PAYLOAD, request6, anc6, ("fd00:0::7", 0, 0, 0))
        assert event == (
            codec.ICMP_ERROR,
            ("fd00::7", 100),
            4660,
            "Address unreachable (ICMP type 1 code 3) from fd00::fe",
        )
        assert codec.decode_queued_error(4, PAYLOAD, request, [], ("10.0.0.7", 0)) is None

    @given(st.binary(max_size=120), st.booleans(), st.sampled_from([4, 6]))
    def test_the_decoders_never_raise_on_garbage(self, data, raw, version):
        source = "10.0.0.7" if version == 4 else "fd00::7"
        event = codec.make_decoder(version, raw, PAYLOAD)(data, source)
        assert event is None or (len(event) == 4 and event[0] in {codec.REPLY, codec.ICMP_ERROR})
        destination = ("10.0.0.7", 0) if version == 4 else ("fd00::7", 0, 0, 0)
        event = codec.decode_queued_error(version, PAYLOAD, data, [(0, 11, data), (41, 25, data)], destination)
        assert event is None or event[0] in {codec.ICMP_ERROR, codec.LOCAL_ERROR}


# ---------------------------------------------------------------------------------------------- matching
# Packets are fed to the pinger's reader through stand-in sockets: no privilege, no traffic.


class FakeSock:
    """Stands in for a channel's socket: hands out queued packets and error-queue entries, records sends.

    ``packets``: (data, source sockaddr, kernel receive time in ns or None), or an OSError to raise once;
    ``errors``: (data, ancillary data, destination sockaddr); ``refuse``: {address: errno} for ``sendto``.
    """

    def __init__(self, packets=(), errors=(), refuse=None):
        self.queue, self.errors, self.refuse = list(packets), list(errors), refuse or {}
        self.sent = []

    def fileno(self):
        return 99

    def recvmsg(self, bufsize, ancbufsize, flags=0):
        if flags & sockets.MSG_ERRQUEUE:
            if not self.errors:
                raise BlockingIOError
            data, anc, addr = self.errors.pop(0)
            return data, anc, flags, addr
        if not self.queue:
            raise BlockingIOError
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        data, addr, rx_ns = item
        anc = [] if rx_ns is None else [(socket.SOL_SOCKET, 35, struct.pack("@ll", *divmod(rx_ns, 1_000_000_000)))]
        return data[:bufsize], anc, 0, addr

    def sendto(self, data, sockaddr):
        if sockaddr[0] in self.refuse:
            raise OSError(self.refuse[sockaddr[0]], "refused")
        self.sent.append((bytes(data), sockaddr))
        return len(data)


def fake_pinger(*channels) -> Pinger:
    p = Pinger.__new__(Pinger)
    p._payload = PAYLOAD
    p._pending, p.ignored, p._next_sequence, p._sequence_start = {}, 0, {}, 500
    p._channels = {c.version: c for c in channels}
    p._active, p._loop = 0, None
    return p


class TestMatching:
    """Everything a socket hands the pinger goes through one reader, :meth:`Pinger._read`: decoded by the
    channel's decoder, then matched against the outstanding requests."""

    def setup_method(self):
        self.v4 = Channel(4, True, FakeSock(), 4660, PAYLOAD)
        self.v6 = Channel(6, True, FakeSock(), 4660, PAYLOAD)
        self.dgram = Channel(4, False, FakeSock(), 4660, PAYLOAD)
        self.p = fake_pinger(self.v4, self.v6)
        self.batch = Batch()
        self.batch.sending = False
        self.target = Target("10.0.0.7", "10.0.0.7", self.v4, ("10.0.0.7", 0), self.batch)

    def expect(self, target, channel, seq, tx_ns=1_000_000):
        target.channel = channel
        self.p._pending[(target.key, seq)] = (target, tx_ns)
        self.batch.outstanding += 1

    def read(self, channel, *packets, errors=(), budget=100):
        channel.sock = FakeSock(packets, errors)
        return self.p._read(channel, budget)

    def test_a_matching_reply_resolves_its_request_with_the_kernel_timestamp(self):
        self.expect(self.target, self.v4, 100)
        good = ipv4("10.0.0.7", "10.0.0.1", icmp(0, 4660, 100, PAYLOAD))
        assert self.read(self.v4, (good, ("10.0.0.7", 0), 3_500_000)) == 1
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_500_000)
        assert self.p._pending == {} and self.batch.outstanding == 0 and self.batch.replies == 1
        assert self.batch.done.is_set()
        self.read(self.v4, (good, ("10.0.0.7", 0), 4_000_000))  # a duplicate changes nothing
        assert (self.target.replies, self.target.rtt_ns, self.p.ignored) == (1, 2_500_000, 1)

    @pytest.mark.parametrize(
        "case", ["wrong id", "wrong source", "wrong sequence", "wrong payload", "short payload", "request", "channel"]
    )
    def test_anything_else_is_ignored(self, case):
        self.expect(self.target, self.v4, 100)
        ident, source, seq, payload, kind = 4660, "10.0.0.7", 100, PAYLOAD, 0
        if case == "wrong id":
            ident = 4661
        elif case == "wrong source":
            source = "10.0.0.8"
        elif case == "wrong sequence":
            seq = 101
        elif case == "wrong payload":
            payload = b"vxlanmgr" + b"X" * 8
        elif case == "short payload":
            payload = PAYLOAD[:-1]
        elif case == "request":
            kind = 8  # an echo REQUEST to that address (raw sockets see those too): not even a reply
        else:  # the right packet, but on another socket than the request went out on
            self.expect(self.target, self.dgram, 100)
        self.read(self.v4, (ipv4(source, "10.0.0.1", icmp(kind, ident, seq, payload)), (source, 0), 3_000_000))
        assert self.target.replies == 0 and self.batch.outstanding == 2 - (case != "channel")
        assert ("10.0.0.7", 100) in self.p._pending
        assert self.p.ignored == (case != "request")

    def test_ip_options_icmp_errors_and_garbage(self):
        self.expect(self.target, self.v4, 100)
        self.expect(self.target, self.v4, 101)
        reply = icmp(0, 4660, 100, PAYLOAD)
        with_options = ipv4("10.0.0.7", "10.0.0.1", reply, options=b"\1\1\1\0")
        quoted = ipv4("10.0.0.1", "10.0.0.7", icmp(8, 4660, 101, PAYLOAD))
        error = ipv4("192.0.2.1", "10.0.0.1", icmp_error(3, 1, quoted))
        n = self.read(
            self.v4,
            (b"\x45garbage", ("10.0.0.7", 0), None),
            (with_options, ("10.0.0.7", 0), 3_000_000),
            (error, ("192.0.2.1", 0), None),
        )
        assert n == 3
        assert (self.target.replies, self.target.rtt_ns) == (1, 2_000_000)
        unreachable = "Destination host unreachable (ICMP type 3 code 1) from 192.0.2.1"
        assert self.target.errors == [("unreachable", unreachable)]  # and no longer waited for
        assert self.p._pending == {} and self.batch.outstanding == 0 and self.batch.icmp_errors == 1
        assert self.batch.done.is_set() and self.p.ignored == 0

    def test_ping_socket_replies_and_queued_errors(self):
        self.p._channels[4] = self.dgram
        for seq in (100, 101, 102):
            self.expect(self.target, self.dgram, seq)
        extended = struct.pack("=IBBBBII", 113, 2, 3, 1, 0, 0, 0)
        offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("10.0.0.254"))
        local = struct.pack("=IBBBBII", 90, 1, 0, 0, 0, 0, 0)
        n = self.read(
            self.dgram,
            OSError(113, "No route to host"),  # the pending error a ping socket reports once
            (icmp(0, 4660, 100, PAYLOAD), ("10.0.0.7", 0), 1_250_000),
            errors=[
                (icmp(8, 4660, 101, PAYLOAD), [(0, 11, extended + offender)], ("10.0.0.7", 0)),
                (icmp(8, 4660, 102, PAYLOAD), [(0, 11, local)], ("10.0.0.7", 0)),
            ],
        )
        assert n == 4
        assert (self.target.replies, self.target.rtt_ns) == (1, 250_000)
        assert self.target.errors == [
            ("unreachable", "Destination host unreachable (ICMP type 3 code 1) from 10.0.0.254"),
            ("error", "local error: Message too long (EMSGSIZE)"),
        ]
        assert self.p._pending == {} and self.batch.icmp_errors == 2 and self.batch.done.is_set()

    def test_ipv6_replies_and_errors(self):
        target6 = Target("fd00::7", "fd00::7", self.v6, ("fd00::7", 0, 0, 0), self.batch)
        self.expect(target6, self.v6, 7)
        self.expect(target6, self.v6, 8)
        quoted = ipv6("fd00::1", "fd00::7", icmp(128, 4660, 8, PAYLOAD))
        self.read(
            self.v6,
            (icmp(129, 4660, 7, PAYLOAD), ("fd00:0::7", 0, 0, 0), None),
            (icmp_error(1, 3, quoted), ("fd00::99", 0, 0, 0), None),
        )
        assert target6.replies == 1 and target6.rtt_ns > 0  # no kernel timestamp: the time it was read
        assert target6.errors == [("unreachable", "Address unreachable (ICMP type 1 code 3) from fd00::99")]
        assert self.p._pending == {}

    def test_one_read_takes_at_most_its_budget(self):
        packets = [(ipv4("10.0.0.9", "10.0.0.1", icmp(0, 1, s, b"")), ("10.0.0.9", 0), None) for s in range(5)]
        self.v4.sock = sock = FakeSock(packets)
        assert self.p._read(self.v4, 3) == 3 and len(sock.queue) == 2
        assert self.p._read(self.v4, 3) == 2 and self.p.ignored == 5


# ---------------------------------------------------------------------------------------------- sending


class TestSending:
    def setup_method(self):
        self.v4 = Channel(4, True, FakeSock(), 4660, PAYLOAD)
        self.p = fake_pinger(self.v4)
        self.batch = Batch()

    async def test_the_send_loop_sends_the_codecs_requests_and_records_each_one(self):
        self.p._next_sequence = {"10.0.0.9": 0xFFFF}
        targets = [Target(a, a, self.v4, (a, 0), self.batch) for a in ("10.0.0.7", "10.0.0.8", "10.0.0.9")]
        await self.p._send_rounds(self.batch, targets, 2, 0.0, asyncio.get_running_loop())
        sequences = {"10.0.0.7": [500, 501], "10.0.0.8": [500, 501], "10.0.0.9": [0xFFFF, 0]}
        expected = [
            (codec.echo_request(4, 4660, sequences[t.key][k], PAYLOAD), (t.key, 0)) for k in range(2) for t in targets
        ]
        assert self.v4.sock.sent == expected
        assert set(self.p._pending) == {(a, s) for a, seqs in sequences.items() for s in seqs}
        assert self.batch.sent == self.batch.outstanding == 6
        assert self.p._next_sequence == {"10.0.0.7": 502, "10.0.0.8": 502, "10.0.0.9": 1}
        self.p._active = 1
        self.p._end(self.batch, targets, 2)  # unanswered requests are forgotten at the end
        assert self.p._pending == {}

    async def test_a_refused_send_fails_its_target_at_once_and_the_others_are_sent(self):
        self.v4.sock = FakeSock(refuse={"10.0.0.8": errno.EHOSTUNREACH})
        targets = [Target(a, a, self.v4, (a, 0), self.batch) for a in ("10.0.0.7", "10.0.0.8", "10.0.0.9")]
        await self.p._send_rounds(self.batch, targets, 1, 0.0, asyncio.get_running_loop())
        assert [address for _packet, (address, _port) in self.v4.sock.sent] == ["10.0.0.7", "10.0.0.9"]
        assert targets[1].errors == [("unreachable", "sendto failed: No route to host (EHOSTUNREACH)")]
        assert (self.batch.sent, self.batch.send_errors, self.batch.outstanding) == (2, 1, 2)

    def test_results(self):
        make = result_maker(2, 1.0)
        target = Target("10.0.0.7", "10.0.0.7", self.v4, ("10.0.0.7", 0), self.batch)
        target.replies, target.rtt_ns = 2, 2_469_000
        assert make(target) == PingResult("10.0.0.7", True, 1.235, 0.0, None, "2/2 replies, rtt avg 1.235 ms")
        target.replies, target.rtt_ns = 1, 1_000_400
        assert make(target) == PingResult("10.0.0.7", True, 1.0, 0.5, None, "1/2 replies, rtt avg 1.000 ms")
        other = Target("10.0.0.8", "10.0.0.8", self.v4, ("10.0.0.8", 0), self.batch)
        assert make(other) == PingResult(
            "10.0.0.8", False, None, 1.0, "timeout", "no reply to 2 echo requests within 1 s"
        )
        other.fail("error", "local error")
        other.fail("unreachable", "gone")
        assert make(other) == PingResult("10.0.0.8", False, None, 1.0, "unreachable", "gone")


def test_send_errors_are_classified():
    assert send_error(OSError(errno.EINVAL, "x"))[0] == "unreachable"
    assert send_error(OSError(errno.EHOSTUNREACH, "x"))[0] == "unreachable"
    assert send_error(OSError(errno.ENETUNREACH, "x"))[0] == "unreachable"
    assert send_error(OSError(errno.EPERM, "x"))[0] == "error"
    assert send_error(OSError(errno.EACCES, "x"))[0] == "error"
    assert send_error(OSError(errno.EADDRNOTAVAIL, "x"))[0] == "error"


# ---------------------------------------------------------------------------------------------- icmplib
# The codec against icmplib's public API and the kernel, on the loopback of a throw-away namespace.


@pytest.mark.netns
class TestAgainstIcmplib:
    def run_in_namespace(self, script):
        with NetNS() as ns:
            ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")  # this namespace only
            return json.loads(ns.run(PY, "-c", script, cwd=REPO, timeout=180).stdout)

    def test_requests_and_replies(self, needs_netns):
        """icmplib sends an echo request (every sequence number on raw IPv4, where the checksum on the wire is
        icmplib's own); a raw socket sees it and the kernel's reply: the request must be the codec's, and the
        codec must decode the reply as icmplib's ``receive`` did, as a raw socket and as a ping socket sees it.
        """
        report = self.run_in_namespace(REFERENCE)
        assert report == {
            "4": {"raw": 0x10000, "unprivileged": 676, "problems": []},
            "6": {"raw": 9363, "unprivileged": 676, "problems": []},
        }

    def test_icmp_errors(self, needs_netns):
        """Forged ICMP errors quoting an echo request: the codec reads the same identifier, sequence number,
        type, code and reporter from them as icmplib's ``receive``."""
        checked = self.run_in_namespace(FORGED_ERRORS)
        assert len(checked) == 9 and all(same for same, *_ in checked), checked


REFERENCE = r"""
import json, secrets, select, socket
from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from monitoring.icmp import codec

payload, ident = b"vxlanmgr" + secrets.token_bytes(8), 4242
report = {}
for version, dest, family, proto in (
    (4, "127.0.0.1", socket.AF_INET, socket.IPPROTO_ICMP),
    (6, "::1", socket.AF_INET6, socket.IPPROTO_ICMPV6),
):
    wire = socket.socket(family, socket.SOCK_RAW, proto)  # sees every ICMP packet of the namespace
    offset = 20 if version == 4 else 0
    counts, problems = {}, []
    for privileged, stride in ((True, 1 if version == 4 else 7), (False, 97)):
        decode = codec.make_decoder(version, privileged, payload)
        sender = (ICMPv4Socket if version == 4 else ICMPv6Socket)(privileged=privileged)
        n = 0
        for seq in range(0, 0x10000, stride):
            request = ICMPRequest(destination=dest, id=ident, sequence=seq, payload=payload)
            sender.send(request)  # on a ping socket the kernel writes the socket's port in as identifier
            reply = sender.receive(request, timeout=2)
            packets = []
            while len(packets) < 2 and select.select([wire], [], [], 2)[0]:
                packets.append(wire.recvfrom(2048))
            sent = [data[offset:] for data, _ in packets if data[offset] == codec.ECHO_REQUEST[version]]
            answers = [(data, source[0]) for data, source in packets if data[offset] == codec.ECHO_REPLY[version]]
            if len(sent) != 1 or len(answers) != 1:
                problems.append([seq, privileged, "packets seen", len(packets)])
                continue
            mine = codec.echo_request(version, request.id, seq, payload)
            if version == 6:  # the kernel computes ICMPv6 checksums itself: compare the rest
                mine, sent[0] = mine[:2] + mine[4:], sent[0][:2] + sent[0][4:]
            if privileged and sent[0] != mine:
                problems.append([seq, "request", sent[0].hex(), mine.hex()])
            data, source = answers[0]
            event = decode(data if privileged else data[offset:], source)  # a ping socket: no IPv4 header
            address = reply.source if version == 4 else codec.norm6(reply.source)
            expected = (codec.REPLY, (address, reply.sequence), reply.id, None)
            if reply.type != codec.ECHO_REPLY[version] or event != expected:
                problems.append([seq, privileged, "reply", repr(event), reply.source, reply.id, reply.sequence])
            n += 1
        sender.close()
        counts["raw" if privileged else "unprivileged"] = n
    report[version] = {**counts, "problems": problems[:5]}
print(json.dumps(report))
"""

FORGED_ERRORS = r"""
import json, secrets, socket, struct
from icmplib import ICMPRequest, ICMPv4Socket, ICMPv6Socket
from monitoring.icmp import codec

payload, ident = b"vxlanmgr" + secrets.token_bytes(8), 4243
checked = []
for version, cases in ((4, [(3, 1), (3, 13), (11, 0), (12, 0)]), (6, [(1, 3), (1, 4), (2, 0), (3, 0), (4, 0)])):
    if version == 4:
        family, proto, local, target = socket.AF_INET, socket.IPPROTO_ICMP, "127.0.0.1", "127.0.0.9"
    else:
        family, proto, local, target = socket.AF_INET6, socket.IPPROTO_ICMPV6, "::1", "::9"
    listener = (ICMPv4Socket if version == 4 else ICMPv6Socket)(privileged=True)
    wire = socket.socket(family, socket.SOCK_RAW, proto)
    wire.settimeout(2)
    forger = socket.socket(family, socket.SOCK_RAW, proto)
    decode = codec.make_decoder(version, True, payload)
    for seq, (icmp_type, code) in enumerate(cases, 300):
        request = codec.echo_request(version, ident, seq, payload)
        if version == 4:
            quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(request), 0, 0, 64, 1, 0,
                                 socket.inet_aton(local), socket.inet_aton(target)) + request
        else:
            quoted = (struct.pack("!IHBB", 6 << 28, len(request), 58, 64) + socket.inet_pton(family, local)
                      + socket.inet_pton(family, target) + request)
        message = struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted
        if version == 4:  # the kernel computes ICMPv6 checksums, not ICMPv4 ones
            message = message[:2] + codec.checksum(message).to_bytes(2, "big") + message[4:]
        forger.sendto(message, (local, 0))
        reply = listener.receive(ICMPRequest(destination=target, id=ident, sequence=seq), timeout=2)
        while True:
            data, source = wire.recvfrom(2048)
            if data[20 if version == 4 else 0] == icmp_type:
                break
        event = decode(data, source[0])
        reporter = reply.source if version == 4 else codec.norm6(reply.source)
        expected = (
            codec.ICMP_ERROR,
            (target, reply.sequence),
            reply.id,
            codec.error_text(version, reply.type, reply.code, reporter),
        )
        same = event == expected and (reply.type, reply.code) == (icmp_type, code)
        checked.append([same, repr(event), repr(expected)])
print(json.dumps(checked))
"""


def test_each_address_starts_at_a_sequence_number_of_its_own(require_icmp):
    async def run() -> dict[str, int]:
        with Pinger() as pinger:
            results = await pinger.ping_batch([f"127.0.93.{n}" for n in range(1, 41)], count=1, timeout=1)
            assert all(result.ok for result in results.values())
            return dict(pinger._next_sequence)

    following = asyncio.run(run())
    assert len(following) == 40 and len(set(following.values())) > 30
