"""The batch engine: :class:`Pinger` sends COUNT echo requests to every address of a batch and matches
what comes back.

The goal is to keep up with ``fping -i0`` at 10,000 targets (``manage.py bench``, docs/benchmarks.md). A
batch costs about as much Python per target as the kernel spends on that target's ``sendto`` and
``recvmsg``, so the loops over targets and packets (:meth:`Pinger._send_chunk`, :meth:`Pinger._read`) do
per packet only what they must, with what they use bound to locals.

* ONE socket per address family (:mod:`~monitoring.icmp.sockets`), created once by the Pinger and reused
  by every batch. Batches may overlap on one Pinger (same event loop): they share the sockets and one
  table of outstanding requests, so a batch full of dead hosts holds up only itself.
* COUNT rounds: round k sends one echo request to every target. Every target gets all COUNT requests even
  if it already answered, so ``loss`` is the real fraction of the COUNT requests that got no reply. Round
  k+1 starts ``interval`` seconds (default 0.05) after round k started, or at once when sending round k
  took longer than that. Each request is the channel's template packet with its sequence number and
  checksum written in (:func:`~monitoring.icmp.codec.stamp`); a failed ``sendto`` leaves the loop for the
  careful path (the packet built in full, retries, errno kept).
* Each request carries a unique (address, sequence) pair: sequence numbers are counted per address and
  keep counting across batches (a batch takes COUNT consecutive ones per address before its first round),
  so a late reply from an earlier batch never matches a later request. A reply is accepted only if its
  source address, identifier, sequence number AND payload all match an outstanding request sent on the
  same socket; everything else (other programs' pings, which a raw socket also sees, duplicates,
  forgeries) is counted in ``ignored`` and otherwise ignored.
* The receive side is kept drained while sending: after every 128 sends up to 512 queued packets are read
  without blocking, and an ``add_reader`` callback reads more whenever the event loop runs.
* One deadline per batch: after the last request of the last round is sent, wait until every request is
  answered (or failed) or ``timeout`` seconds have passed. A reply that arrives before that deadline
  counts even if it came more than ``timeout`` after its own request. The event loop is never blocked for
  more than one step of 128 sends / 512 reads (a few ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time

from icmplib.exceptions import ICMPSocketError, SocketPermissionError

from . import codec
from .batch import Batch, Target, assemble, plan
from .results import ERROR, UNREACHABLE, PingResult, result_maker, send_error
from .sockets import (
    ANC_SIZE,
    DEFAULT_RCVBUF,
    MSG_ERRQUEUE,
    RECV_SIZE,
    RETRY_LATER_ERRNOS,
    SO_TIMESTAMPNS,
    Channel,
    PingerMode,
    PingerUnavailable,
    open_channel,
    probe_privileges,
    unavailable_message,
)

DEFAULT_COUNT = 2
DEFAULT_TIMEOUT = 1.0
DEFAULT_INTERVAL = 0.05
MAX_COUNT = 100

_SEND_CHUNK = 128  # sends between two drains of the receive queue / yields to the event loop
_READ_BUDGET = 512  # packets read per reader callback / drain step before yielding back to the loop
_SEND_RETRIES = 500  # 1 ms apart, when the send buffer is full (EAGAIN/ENOBUFS)
_MAGIC = b"vxlanmgr"
_TIMESPEC = struct.Struct("@ll")


class Pinger:
    """Holds one ICMP socket per address family open across batches; see the module docstring.

    ``mode``: None = :func:`probe_privileges`; ``ident``: ICMP identifier (raw) or ping-socket port
    (unprivileged), random/kernel-chosen by default; ``sequence_start``: first sequence number used for
    each new address (random by default; tests pin it). Raises :class:`PingerUnavailable`.
    """

    def __init__(
        self,
        mode: PingerMode | str | None = None,
        *,
        ident: int | None = None,
        sequence_start: int | None = None,
        rcvbuf: int = DEFAULT_RCVBUF,
    ):
        self.mode = probe_privileges(mode)
        if ident is None and self.mode is PingerMode.RAW:
            ident = secrets.randbelow(0xFFFF) + 1
        self._payload = _MAGIC + secrets.token_bytes(8)
        # Each address starts at a random sequence number of its own (unless a test pins one), so seeing one
        # host's requests tells nothing about another's.
        self._sequence_start = None if sequence_start is None else sequence_start & 0xFFFF
        self._next_sequence: dict[str, int] = {}
        # (address, sequence) -> (target, send time in ns): the outstanding requests of all running batches
        self._pending: dict[tuple[str, int], tuple[Target, int]] = {}
        self._channels: dict[int, Channel] = {}
        self._unavailable: dict[int, str] = {}
        self._active = 0  # running batches; the sockets are watched by the event loop while > 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ignored = 0  # packets read that matched no outstanding request of ours (cumulative)
        self.last_stats: dict[str, float] = {}
        for version in (4, 6):
            try:
                self._channels[version] = open_channel(version, self.mode, ident, rcvbuf, self._payload)
            except (ICMPSocketError, OSError) as exc:
                if version == 6:  # IPv6 disabled: IPv6 targets fail with "error", IPv4 works
                    self._unavailable[6] = f"no ICMPv6 socket: {exc}"
                    continue
                self.close()
                if isinstance(exc, SocketPermissionError):
                    raise PingerUnavailable(unavailable_message()) from exc
                raise PingerUnavailable(f"cannot open an ICMPv4 socket: {exc}") from exc

    # -- lifecycle
    def close(self) -> None:
        """Close the sockets. Batches still running end with "error" results at their deadline."""
        channels, self._channels = self._channels, {}
        if self._active and self._loop is not None:
            for channel in channels.values():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(channel.fd)
        for channel in channels.values():
            channel.close()
        self._unavailable = {4: "pinger closed", 6: "pinger closed"}

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    async def __aenter__(self) -> Pinger:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return not self._channels

    def ident(self, version: int = 4) -> int | None:
        """The ICMP identifier used on the given address family (None when that family is unavailable)."""
        channel = self._channels.get(version)
        return channel.ident if channel else None

    def rcvbuf(self, version: int = 4) -> int | None:
        """The effective receive buffer of that family's socket in bytes (as the kernel reports it)."""
        channel = self._channels.get(version)
        return channel.rcvbuf if channel else None

    # -- receiving
    def _read(self, channel: Channel, budget: int = _READ_BUDGET) -> int:
        """Read up to ``budget`` queued packets of ``channel`` without blocking (the normal queue, then a ping
        socket's error queue), decode each and apply it to the outstanding request it concerns, if any.
        Returns how many were read.

        The one place where packets meet requests, run once per reply of a batch: what it uses is bound to
        locals first, and a matched reply costs the decoder call, one dict ``pop`` and a few counters.
        """
        sock = channel.sock
        if sock.fileno() < 0:
            return 0
        recvmsg, decode, version, ident = sock.recvmsg, channel.decode, channel.version, channel.ident
        payload = self._payload
        pending, reply = self._pending, codec.REPLY
        unpack_ts, time_ns = _TIMESPEC.unpack_from, time.time_ns
        sol_socket, timestampns = socket.SOL_SOCKET, SO_TIMESTAMPNS
        flags = n = 0
        while n < budget:
            try:
                data, anc, _flags, addr = recvmsg(RECV_SIZE, ANC_SIZE, flags)
            except BlockingIOError:
                if flags or channel.raw:
                    break
                flags = MSG_ERRQUEUE  # the ICMP errors a ping socket queued for our requests
                continue
            except InterruptedError:
                continue
            except OSError:  # a pending asynchronous error on a ping socket; details are in the error queue
                n += 1
                continue
            n += 1
            rx_ns = 0
            for level, kind, cdata in anc:
                if kind == timestampns and level == sol_socket and len(cdata) >= 16:
                    sec, nsec = unpack_ts(cdata)
                    rx_ns = sec * 1_000_000_000 + nsec
            try:
                if flags:
                    event = codec.decode_queued_error(version, payload, data, anc, addr)
                else:
                    event = decode(data, addr[0])
            except (ValueError, IndexError, struct.error):  # not a packet of ours, whatever it is
                continue
            if event is None:  # not about an echo request (an ICMP error about other traffic, garbage)
                continue
            kind, key, event_ident, detail = event
            entry = pending.pop(key, None) if event_ident == ident else None
            if entry is None:
                self.ignored += 1  # another program's ping, a late/duplicate reply, a forgery
                continue
            target, tx_ns = entry
            if target.channel is not channel:  # the request went out on another socket: not its answer
                pending[key] = entry
                self.ignored += 1
                continue
            batch = target.batch
            if kind is reply:
                rtt = (rx_ns or time_ns()) - tx_ns
                target.replies += 1
                if rtt > 0:
                    target.rtt_ns += rtt
                batch.replies += 1
            else:
                target.fail(UNREACHABLE if kind == codec.ICMP_ERROR else ERROR, detail)
                batch.icmp_errors += 1
            batch.outstanding -= 1
            if not batch.outstanding and not batch.sending:
                batch.done.set()
        return n

    def _drain(self, budget: int = _READ_BUDGET) -> int:
        n = 0
        for channel in list(self._channels.values()):
            n += self._read(channel, budget)
        return n

    def _on_readable(self, channel: Channel) -> None:
        self._read(channel, _READ_BUDGET)

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._active and self._loop is not loop:
            raise RuntimeError("concurrent batches of one Pinger must run on the same event loop")
        if not self._active:
            self._loop = loop
            for channel in self._channels.values():
                loop.add_reader(channel.fd, self._on_readable, channel)
        self._active += 1

    def _end(self, batch: Batch, targets: list[Target], count: int) -> None:
        if batch.outstanding:  # forget what is still unanswered: late replies are then ignored
            pending = self._pending
            for target in targets:
                first = target.first_sequence
                if first < 0:
                    continue
                for k in range(count):
                    key = (target.key, (first + k) & 0xFFFF)
                    entry = pending.get(key)
                    if entry is not None and entry[0] is target:
                        del pending[key]
        self._active -= 1
        if not self._active and self._loop is not None:
            for channel in self._channels.values():
                self._loop.remove_reader(channel.fd)

    # -- batches
    async def ping_batch(
        self,
        addresses: list[str],
        count: int = DEFAULT_COUNT,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        interval: float = DEFAULT_INTERVAL,
    ) -> dict[str, PingResult]:
        """Ping every address COUNT times in one batch; return ``{address as given: PingResult}``.

        Never raises for a bad or unreachable address (that is a failed result); raises ValueError for
        bad arguments and RuntimeError when the Pinger is closed.
        """
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}")
        if not timeout > 0 or interval < 0:
            raise ValueError("timeout must be > 0 and interval >= 0")
        if self.closed:
            raise RuntimeError("Pinger is closed")
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        ignored_before = self.ignored
        batch = Batch()
        targets, wanted = await plan(list(addresses), self._channels, self._unavailable, batch)
        if targets:
            if not self._active:  # nobody is listening: discard what queued up since the last batch
                for channel in list(self._channels.values()):
                    while channel.discard(_READ_BUDGET) >= _READ_BUDGET:
                        await asyncio.sleep(0)
            self._begin(loop)
            sending = list(targets.values())
            try:
                await self._send_rounds(batch, sending, count, interval, loop)
                batch.sending = False
                if batch.outstanding:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(batch.done.wait(), timeout)
                    for _ in range(64):  # replies already queued at the deadline still count
                        if not batch.outstanding or self._drain() < _READ_BUDGET:
                            break
                        await asyncio.sleep(0)
            finally:
                self._end(batch, sending, count)
        results = await assemble(targets, wanted, result_maker(count, timeout))
        self.last_stats = {
            **batch.stats,
            "targets": len(targets),
            "unanswered": batch.outstanding,
            "ignored": self.ignored - ignored_before,
            "duration_s": round(time.monotonic() - started, 4),
        }
        return results

    async def _send_rounds(
        self, batch: Batch, targets: list[Target], count: int, interval: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        groups: dict[Channel, list[Target]] = {}
        next_sequence, start = self._next_sequence, self._sequence_start
        # Random first sequence numbers for addresses new to this Pinger, drawn in one call: one per address
        # (secrets.randbelow) cost a quarter of a 10,000-target batch.
        fresh = sum(1 for target in targets if target.key not in next_sequence) if start is None else 0
        starts = iter(memoryview(secrets.token_bytes(2 * fresh)).cast("H")) if fresh else None
        for target in targets:  # reserve COUNT consecutive sequence numbers per address
            groups.setdefault(target.channel, []).append(target)
            key = target.key
            sequence = next_sequence.get(key)
            if sequence is None:
                sequence = next(starts) if start is None else start
            target.first_sequence = sequence
            next_sequence[key] = (sequence + count) & 0xFFFF
        for round_number in range(count):
            round_started = loop.time()
            for channel, group in groups.items():
                for first in range(0, len(group), _SEND_CHUNK):
                    i, end = first, min(first + _SEND_CHUNK, len(group))
                    while i < end:
                        if channel.sock.fileno() < 0:
                            for target in group[i:end]:
                                target.fail(ERROR, "pinger closed")
                            break
                        i, failure = self._send_chunk(batch, channel, group, i, end, round_number)
                        if failure is not None:  # rare: the careful path, with retries and waits
                            await self._send_slow(batch, channel, *failure)
                            i += 1
                    self._drain()
                    await asyncio.sleep(0)
            self._drain()
            if round_number < count - 1:
                await asyncio.sleep(max(0.0, round_started + interval - loop.time()))

    def _send_chunk(
        self, batch: Batch, channel: Channel, group: list[Target], i: int, end: int, round_number: int
    ) -> tuple[int, tuple[Target, int, OSError] | None]:
        """The hot loop: send the echo requests of ``group[i:end]``, each the channel's template packet with
        its sequence number and checksum stamped in place. Stops at the first failed ``sendto``:
        (its index, (target, sequence, error)); else (end, None)."""
        pending = self._pending
        stamp, packet, partial, ident = codec.stamp, channel.packet, channel.partial, channel.ident
        sendto, time_ns = channel.sock.sendto, time.time_ns
        failure = None
        first = i
        while i < end:
            target = group[i]
            sequence = (target.first_sequence + round_number) & 0xFFFF
            stamp(packet, partial, ident, sequence)
            tx_ns = time_ns()
            try:
                sendto(packet, target.sockaddr)
            except OSError as exc:
                failure = (target, sequence, exc)
                break
            pending[target.key, sequence] = (target, tx_ns)
            i += 1
        batch.sent += i - first
        batch.outstanding += i - first
        return i, failure

    async def _send_slow(self, batch: Batch, channel: Channel, target: Target, sequence: int, exc: OSError) -> None:
        """A ``sendto`` of the hot loop failed: classify, retry (a full send buffer: drain and wait) or fail."""
        packet = channel.request(sequence)
        tx_ns, error = channel.transmit(packet, target.sockaddr, exc)
        for _attempt in range(_SEND_RETRIES):
            if error is None or error.errno not in RETRY_LATER_ERRNOS:
                break
            self._drain()  # send buffer full: let replies in and the device queue empty
            await asyncio.sleep(0.001)
            tx_ns, error = channel.transmit(packet, target.sockaddr)
        if error is None:
            self._pending[target.key, sequence] = (target, tx_ns)
            batch.outstanding += 1
            batch.sent += 1
        else:
            target.fail(*send_error(error))
            batch.send_errors += 1


async def ping_batch(
    addresses: list[str],
    count: int = DEFAULT_COUNT,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    interval: float = DEFAULT_INTERVAL,
    mode: PingerMode | str | None = None,
) -> dict[str, PingResult]:
    """One-shot convenience: open a :class:`Pinger`, run one batch, close it. The monitor keeps a Pinger."""
    with Pinger(mode) as pinger:
        return await pinger.ping_batch(addresses, count, timeout, interval=interval)
