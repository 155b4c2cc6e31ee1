"""ICMP echo checks for the machine monitor. This is the only vxlanmgr code that sends ICMP.

Usage from the monitor loop (one :class:`Pinger` for the life of the process)::

    pinger = Pinger()                     # probes privileges, opens one ICMP socket per address family
    results = await pinger.ping_batch(["10.1.0.7", "fd00::7"], count=2, timeout=1.0)
    results["10.1.0.7"].ok, .rtt_ms, .loss, .failure, .detail
    pinger.close()                        # on shutdown

How a batch works
-----------------
* ONE socket per address family, created once by :class:`Pinger` and reused by every batch. The sockets
  are icmplib's ``ICMPv4Socket``/``ICMPv6Socket``: ``privileged=False`` (kernel "ping" sockets,
  ``SOCK_DGRAM``) when ``net.ipv4.ping_group_range`` admits our group, else ``privileged=True``
  (``SOCK_RAW``, root or CAP_NET_RAW); see :func:`probe_privileges`. The send itself is a plain ``sendto``
  on icmplib's socket so that the kernel's errno survives (icmplib's ``send()`` folds it into a string) and
  no ``getaddrinfo`` runs per packet.
* Where the hot path bypasses icmplib, and why: a batch costs about as much Python per target as the
  kernel spends on that target's ``sendto`` and ``recvmsg``, so per packet it does only what it must
  (the goal is to keep up with ``fping -i0``; ``manage.py bench``, docs/benchmarks.md).
  - Sending: icmplib builds ONE echo request per batch and address family (``ICMPRequest`` + its packet
    builder, sequence 0: :meth:`_Channel.template`). Each request is that packet, in one reused buffer,
    with its sequence number and checksum patched in (the checksum from the template's partial sum, RFC
    1071/1624), byte for byte what icmplib would build (a test checks every sequence number), then sent.
    A failed ``sendto`` leaves the loop for the careful path (icmplib's packet, retries, errno kept).
  - Receiving: an echo reply carrying our identifier and payload is matched straight from its bytes:
    type, identifier, sequence and payload at fixed offsets (raw IPv4: behind a 20-byte IP header; a
    header with options is left to the slow path), the source from ``recvmsg``, the time from the
    kernel timestamp; no objects besides the lookup key. Everything else (ICMP errors, IP options,
    anything not ours) goes to icmplib's reply parser and the full matcher, which apply the same rules.
  - Results: replies are counted and their RTTs summed per target; each result is built once, with
    integer arithmetic, the detail strings shared between equal results and :class:`PingResult`'s slots
    set directly (what its frozen-dataclass ``__init__`` does, at half the cost).
* COUNT rounds: round k sends one echo request to every target. Every target gets all COUNT requests
  even if it already answered, so ``loss`` is the real fraction of the COUNT requests that got no reply.
  Round k+1 starts ``interval`` seconds (default 0.05) after round k started, or at once when sending
  round k took longer than that.
* Each request carries a unique (address, sequence) pair: sequence numbers are counted per address and
  keep counting across batches (a batch takes COUNT consecutive ones per address before its first round),
  so a late reply from an earlier batch never matches a later request.
  A reply is accepted only if its source address, identifier, sequence number AND payload (the constant
  ``vxlanmgr`` plus an 8-byte random token of this Pinger) all match an outstanding request; everything
  else (other programs' pings, which a raw socket also sees, duplicates, forgeries) is ignored. With
  unprivileged sockets the kernel rewrites the identifier to the socket's port and only delivers
  replies carrying it, so the identifier is that port.
* The receive side is kept drained while sending: SO_RCVBUF is raised to 8 MiB (SO_RCVBUFFORCE when
  allowed, otherwise capped by net.core.rmem_max), after every 128 sends up to 512 queued packets are
  read without blocking, and an ``add_reader`` callback reads more whenever the event loop runs. Raw
  sockets get a kernel ICMP type filter (echo replies and errors only). RTTs use kernel receive
  timestamps (SO_TIMESTAMPNS), so a reply that waits in the queue while we are still sending is not
  penalised.
* One deadline per batch: after the last request of the last round is sent, wait until every request
  is answered (or failed) or ``timeout`` seconds have passed. A reply that arrives before that deadline
  counts even if it came more than ``timeout`` after its own request. The event loop is never blocked
  for more than one step of 128 sends / 512 reads (a few ms).
* Batches may overlap on one Pinger (same event loop): they share the sockets and one table of
  outstanding requests, so a batch full of dead hosts holds up only itself.

Result of one target (:class:`PingResult`)
------------------------------------------
* ``ok`` if at least one echo reply arrived; ``rtt_ms`` is the AVERAGE round-trip time of the replies
  received (None when none), ``loss`` = 1 - replies / COUNT.
* otherwise ``failure`` is, in this order of precedence:
  - ``"unreachable"``: an ICMP destination unreachable / time exceeded / parameter problem came back for
    one of our requests, or the kernel refused the send because of the route: EHOSTUNREACH, ENETUNREACH,
    EHOSTDOWN, ENETDOWN, or EINVAL (what a ``blackhole`` route returns; addresses are validated before
    sending, so EINVAL cannot mean a malformed address). Refused sends fail at once, and a request
    answered by an ICMP error stops being waited for, so neither holds the batch until its deadline.
  - ``"error"``: a local problem: invalid/unspecified address, no socket for that address family,
    EPERM/EACCES (a local firewall OUTPUT drop, a ``prohibit`` route, a broadcast address, missing
    privilege), a send buffer that stayed full, or any other errno.
  - ``"timeout"``: all requests were sent and nothing came back before the batch deadline. (Routers
    rate-limit ICMP errors, so behind one router some unreachable hosts may show up as timeouts.)
  ``detail`` is a short human-readable explanation (also set for successes, e.g. "2/2 replies").

Run ``python -m monitoring.pinger --help`` for a command-line front end that prints JSON (used by the
namespace tests, handy for debugging a deployment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import errno
import functools
import ipaddress
import json
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Literal

from icmplib import ICMPReply, ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPError, ICMPSocketError, SocketPermissionError

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "Failure",
    "PingResult",
    "Pinger",
    "PingerMode",
    "PingerUnavailable",
    "ping_batch",
    "probe_privileges",
]

DEFAULT_COUNT = 2
DEFAULT_TIMEOUT = 1.0
DEFAULT_INTERVAL = 0.05
DEFAULT_RCVBUF = 8 * 1024 * 1024
MAX_COUNT = 100

Failure = Literal["timeout", "unreachable", "error"]
TIMEOUT: Failure = "timeout"
UNREACHABLE: Failure = "unreachable"
ERROR: Failure = "error"

_SEND_CHUNK = 128  # sends between two drains of the receive queue / yields to the event loop
_READ_BUDGET = 512  # packets read per reader callback / drain step before yielding back to the loop
_SEND_RETRIES = 500  # 1 ms apart, when the send buffer is full (EAGAIN/ENOBUFS)
_MAGIC = b"vxlanmgr"

# Linux constants the socket module does not export.
_SOL_IP, _SOL_IPV6, _SOL_RAW = 0, 41, 255
_IP_RECVERR, _IPV6_RECVERR = 11, 25
_ICMP_FILTER, _ICMP6_FILTER = 1, 1
_SO_RCVBUFFORCE, _SO_TIMESTAMPNS = 33, 35
_SO_EE_ORIGIN_LOCAL = 1
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_TIMESPEC = struct.Struct("@ll")
_ID_SEQ = struct.Struct("!HH")
_ECHO_PATCH = struct.Struct("!HHH")  # checksum, identifier, sequence: bytes 2-7 of an echo request
_RECV_SIZE = 512  # enough for our replies and for the headers an ICMP error quotes
_ANC_SIZE = 256

_UNREACHABLE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EINVAL}
_RETRY_LATER_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS}
_ERRNO_HINTS = {
    errno.EINVAL: "blackhole route",
    errno.EPERM: "local firewall or missing privilege",
    errno.EACCES: "prohibit route, broadcast address or missing privilege",
}


@dataclass(frozen=True, slots=True)
class PingResult:
    """Outcome of the COUNT echo requests sent to one address in one batch."""

    address: str
    ok: bool
    rtt_ms: float | None  # average of the replies received
    loss: float  # 0..1, fraction of the COUNT requests without a reply
    failure: Failure | None  # None when ok
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


# object.__new__ and the setters of PingResult's slots, in field order
_RESULT_SLOTS = (object.__new__, tuple(getattr(PingResult, field.name).__set__ for field in fields(PingResult)))


def _result_constructor():
    """A constructor for :class:`PingResult` that sets its slots directly, as its dataclass ``__init__``
    does through ``object.__setattr__`` (frozen), at half the cost: one result per target per batch."""
    new, (set_address, set_ok, set_rtt, set_loss, set_failure, set_detail) = _RESULT_SLOTS

    def new_result(
        address: str, ok: bool, rtt_ms: float | None, loss: float, failure: Failure | None, detail: str
    ) -> PingResult:
        result = new(PingResult)
        set_address(result, address)
        set_ok(result, ok)
        set_rtt(result, rtt_ms)
        set_loss(result, loss)
        set_failure(result, failure)
        set_detail(result, detail)
        return result

    return new_result


_new_result = _result_constructor()


class PingerMode(enum.StrEnum):
    UNPRIVILEGED = "unprivileged"  # SOCK_DGRAM "ping" sockets, allowed by net.ipv4.ping_group_range
    RAW = "raw"  # SOCK_RAW, needs root or CAP_NET_RAW

    @property
    def privileged(self) -> bool:
        return self is PingerMode.RAW


class PingerUnavailable(RuntimeError):
    """Neither kind of ICMP socket can be opened; the message is one line saying how to grant it."""


# ---------------------------------------------------------------------------------------------- privileges


def _ping_group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as fh:
            return " ".join(fh.read().split())
    except OSError:
        return "unknown"


def _unavailable_message() -> str:
    python = os.path.realpath(sys.executable)
    return (
        f"cannot send ICMP echo requests: gid {os.getgid()} is outside net.ipv4.ping_group_range "
        f"({_ping_group_range()}) and raw sockets need root or CAP_NET_RAW; grant one with "
        f'`sysctl -w net.ipv4.ping_group_range="0 2147483647"` or `setcap cap_net_raw+ep {python}`, '
        f"or run as root"
    )


def _try_open(mode: PingerMode) -> str | None:
    """Open and close an ICMPv4 socket in ``mode``; None if that works, else why not."""
    try:
        ICMPv4Socket(privileged=mode.privileged).close()
    except ICMPSocketError as exc:
        return str(exc)
    return None


def probe_privileges(prefer: PingerMode | str | None = None) -> PingerMode:
    """Decide which ICMP sockets this process can use.

    Unprivileged "ping" sockets are preferred (the kernel demultiplexes replies per socket and reports
    ICMP errors per request); raw sockets are the fallback. With ``prefer`` only that mode is tried.
    Raises :class:`PingerUnavailable` with a one-line fix when no usable mode is left.
    """
    modes = [PingerMode(prefer)] if prefer else [PingerMode.UNPRIVILEGED, PingerMode.RAW]
    reasons = {mode: _try_open(mode) for mode in modes}
    for mode, reason in reasons.items():
        if reason is None:
            return mode
    if prefer:
        mode = modes[0]
        raise PingerUnavailable(
            f"{mode.value} ICMP sockets are not available ({reasons[mode]}); {_unavailable_message()}"
        )
    raise PingerUnavailable(_unavailable_message())


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(slots=True)
class _Event:
    """A decoded packet that concerns one of our echo requests (not yet checked against a batch)."""

    kind: Literal["reply", "icmp_error", "local_error"]
    address: str  # replier (reply) or original destination (errors), normalised
    ident: int
    sequence: int
    payload: bytes | None = None  # echoed data (replies only)
    detail: str = ""


@functools.lru_cache(maxsize=65536)
def _norm6(address: str) -> str:
    return str(ipaddress.IPv6Address(address.split("%", 1)[0]))


def _icmp_error_text(version: int, icmp_type: int, code: int, reporter: str | None) -> str:
    reply = ICMPReply(
        source=reporter, family=version, id=0, sequence=0, type=icmp_type, code=code, bytes_received=0, time=0
    )
    try:
        reply.raise_for_status()
        text = f"ICMP type {icmp_type} code {code}"
    except ICMPError as exc:
        text = str(exc)
    if (version, icmp_type) in {(4, 12), (6, 4)}:
        text = "Parameter problem"
    elif (version, icmp_type) == (6, 2):
        text = "Packet too big"
    return f"{text} (ICMP type {icmp_type} code {code})" + (f" from {reporter}" if reporter else "")


class _Channel:
    """One icmplib ICMP socket (one address family), configured for batch use."""

    def __init__(self, version: int, mode: PingerMode, ident: int | None, rcvbuf: int):
        self.version = version
        self.raw = mode is PingerMode.RAW
        self.icmp = (ICMPv4Socket if version == 4 else ICMPv6Socket)(privileged=self.raw)
        try:
            self._configure(ident, rcvbuf)
        except BaseException:
            self.icmp.close()
            raise

    def _configure(self, ident: int | None, rcvbuf: int) -> None:
        sock = self.sock = self.icmp.sock
        sock.setblocking(False)
        self.fd = sock.fileno()
        self.echo_reply = 0 if self.version == 4 else 129
        self.error_types = {3, 11, 12} if self.version == 4 else {1, 2, 3, 4}
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # needs CAP_NET_ADMIN; then the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        if self.raw:
            # Raw sockets see every ICMP packet of the namespace: let only echo replies and errors through.
            if self.version == 4:
                blocked = 0xFFFFFFFF & ~sum(1 << t for t in (self.echo_reply, *self.error_types))
                sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
            else:
                words = [0xFFFFFFFF] * 8
                for t in (self.echo_reply, *self.error_types):
                    words[t >> 5] &= ~(1 << (t & 31))
                sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
            self.ident = ident
        else:
            # Ping sockets report ICMP errors through the error queue when RECVERR is on.
            if self.version == 4:
                sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
            else:
                sock.setsockopt(_SOL_IPV6, _IPV6_RECVERR, 1)
            if ident:  # the IPv4 and IPv6 ping sockets share one identifier space
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0" if self.version == 4 else "::", ident or 0))  # noqa: S104 (ICMP "port" = ident)
            self.ident = sock.getsockname()[1]

    def close(self) -> None:
        self.icmp.close()

    # -- sending
    def packet(self, sequence: int, payload: bytes) -> bytes:
        """One echo request built by icmplib (the reference for :meth:`template`)."""
        request = ICMPRequest(destination="", id=self.ident, sequence=sequence, payload=payload)
        return self.icmp._create_packet(id=request.id, sequence=request.sequence, payload=request.payload)

    def template(self, payload: bytes) -> tuple[bytearray, int]:
        """(packet, partial sum): icmplib's echo request with sequence 0, and the one's-complement sum of its
        16-bit words without the checksum field. The request for sequence ``s`` is that packet with ``s`` in
        bytes 6-7 and the checksum ``~fold(sum + s)`` in bytes 2-3 (RFC 1071/1624: the checksum of the
        changed packet follows from the old sum and the changed word alone), exactly what icmplib computes.
        """
        packet = self.packet(0, payload)
        words = packet[:2] + b"\0\0" + packet[4:] + b"\0" * (len(packet) % 2)
        total = sum(struct.unpack(f"!{len(words) // 2}H", words))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return bytearray(packet), total

    def transmit(self, packet: bytes, sockaddr: tuple, failed: OSError | None = None) -> tuple[int, OSError | None]:
        """``sendto`` once; returns (send time in ns, None) or (0, the error).

        On a ping socket an ICMP error that arrived for an EARLIER request is also reported by the next
        ``sendto`` (the packet is then not sent); the error queue already holds the details, so such a
        one-off error is retried. An error that repeats is the real one. ``failed``: the error of an
        attempt the caller already made.
        """
        last: OSError | None = None
        attempts = 3
        if failed is not None:
            if failed.errno in _RETRY_LATER_ERRNOS or self.raw:
                return 0, failed
            last, attempts = failed, 2
        for _ in range(attempts):
            tx_ns = time.time_ns()
            try:
                self.sock.sendto(packet, sockaddr)
            except OSError as exc:
                if exc.errno in _RETRY_LATER_ERRNOS or self.raw or (last is not None and last.errno == exc.errno):
                    return 0, exc
                last = exc
                continue
            return tx_ns, None
        return 0, last

    # -- receiving
    def discard(self, budget: int) -> int:
        """Drop up to ``budget`` queued packets (and queued errors) unread: replies nobody waits for."""
        n = 0
        while n < budget:
            try:
                self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # a pending asynchronous error on a ping socket; counted like a packet
                pass
            n += 1
        if not self.raw:
            n += self.read_errors(None, budget)
        return n

    def read_errors(self, handle, budget: int) -> int:
        n = 0
        while n < budget:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                n += 1
                continue
            n += 1
            try:
                event = self.decode_queued_error(data, anc, addr)
            except (ValueError, IndexError, struct.error):
                continue
            if event is not None and handle is not None:
                handle(self, event, time.time_ns())
        return n

    def decode(self, data: bytes, source: str) -> _Event | None:
        """Decode a packet from the normal receive queue (raw: with IPv4 header; ping socket: without)."""
        offset = 0
        if self.raw and self.version == 4:
            if len(data) < 20:
                return None
            ihl = (data[0] & 0x0F) * 4
            if ihl != 20:  # icmplib's parser expects a 20-byte header: drop IP options
                data = data[:20] + data[ihl:]
            offset = 20
        reply = self.icmp._parse_reply(packet=data, source=source, current_time=0)
        if reply is None:
            return None
        if reply.type == self.echo_reply:
            address = source if self.version == 4 else _norm6(source)
            return _Event("reply", address, reply.id, reply.sequence, data[offset + 8 :])
        if self.raw and reply.type in self.error_types:
            return self._decode_raw_error(data[offset + 8 :], reply.type, reply.code, source)
        return None

    def _decode_raw_error(self, inner: bytes, icmp_type: int, code: int, reporter: str) -> _Event | None:
        """The quoted original datagram of an ICMP error seen on a raw socket: was it our echo request?"""
        if self.version == 4:
            if len(inner) < 20 or inner[9] != socket.IPPROTO_ICMP:
                return None
            ihl = (inner[0] & 0x0F) * 4
            destination = socket.inet_ntop(socket.AF_INET, inner[16:20])
            quoted = inner[ihl:]
            request_type = 8
        else:
            if len(inner) < 40 or inner[6] != socket.IPPROTO_ICMPV6:
                return None
            destination = _norm6(socket.inet_ntop(socket.AF_INET6, inner[24:40]))
            quoted = inner[40:]
            request_type = 128
        if len(quoted) < 8 or quoted[0] != request_type:
            return None
        ident, sequence = _ID_SEQ.unpack_from(quoted, 4)
        return _Event(
            "icmp_error", destination, ident, sequence, detail=_icmp_error_text(self.version, icmp_type, code, reporter)
        )

    def decode_queued_error(self, data: bytes, anc: list, addr: tuple) -> _Event | None:
        """An entry of a ping socket's error queue: ``data`` is our original request, ``addr`` its destination."""
        if len(data) < 8 or not addr:
            return None
        ident, sequence = _ID_SEQ.unpack_from(data, 4)
        destination = addr[0] if self.version == 4 else _norm6(addr[0])
        for level, kind, cdata in anc:
            if (level, kind) not in {(_SOL_IP, _IP_RECVERR), (_SOL_IPV6, _IPV6_RECVERR)}:
                continue
            if len(cdata) < _EXTENDED_ERR.size:
                continue
            ee_errno, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(cdata)
            if origin == _SO_EE_ORIGIN_LOCAL:
                name = errno.errorcode.get(ee_errno, str(ee_errno))
                return _Event(
                    "local_error", destination, ident, sequence, detail=f"local error: {os.strerror(ee_errno)} ({name})"
                )
            reporter = None
            offender = cdata[_EXTENDED_ERR.size :]
            if self.version == 4 and len(offender) >= 8 and offender[:2] != b"\0\0":
                reporter = socket.inet_ntop(socket.AF_INET, offender[4:8])
            elif self.version == 6 and len(offender) >= 24 and offender[:2] != b"\0\0":
                reporter = _norm6(socket.inet_ntop(socket.AF_INET6, offender[8:24]))
            return _Event(
                "icmp_error",
                destination,
                ident,
                sequence,
                detail=_icmp_error_text(self.version, icmp_type, code, reporter),
            )
        return None


# ---------------------------------------------------------------------------------------------- batches


class _Target:
    """One distinct address of a batch. Kept small (few objects per target: less for the garbage collector):
    replies are counted and their round-trip times summed, the error list exists only once there is one."""

    __slots__ = ("address", "batch", "channel", "errors", "first_sequence", "key", "replies", "rtt_ns", "sockaddr")

    def __init__(self, key: str, address: str, channel: _Channel, sockaddr: tuple, batch: _Batch):
        self.key = key
        self.address = address
        self.channel = channel
        self.sockaddr = sockaddr
        self.batch = batch
        self.replies = 0
        self.rtt_ns = 0  # sum over the replies
        self.errors: list[tuple[Failure, str]] | None = None
        self.first_sequence = -1  # round k uses first_sequence + k; -1 until the first round reserved them

    def fail(self, kind: Failure, detail: str) -> None:
        if self.errors is None:
            self.errors = []
        self.errors.append((kind, detail))


class _Batch:
    __slots__ = ("done", "icmp_errors", "outstanding", "replies", "send_errors", "sending", "sent")

    def __init__(self):
        self.outstanding = 0  # requests sent and neither answered nor failed yet
        self.sending = True
        self.done = asyncio.Event()
        self.sent = self.replies = self.icmp_errors = self.send_errors = 0

    @property
    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "replies": self.replies,
            "icmp_errors": self.icmp_errors,
            "send_errors": self.send_errors,
        }

    def resolved(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and not self.sending:
            self.done.set()


def _parse_address(text: str) -> tuple[int, str, tuple] | str:
    """(version, key, sockaddr) for an IP address literal, or a reason why it cannot be pinged."""
    if not isinstance(text, str):
        return f"not an IP address: {text!r}"
    try:  # fast path: inet_pton only accepts canonical dotted quads (no leading zeros, no shorthand)
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    else:
        return (4, text, (text, 0)) if text != "0.0.0.0" else f"unspecified address {text!r}"  # noqa: S104
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return f"not an IP address: {text!r}"
    if ip.is_unspecified:
        return f"unspecified address {text!r}"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        key = str(ip)
        return 4, key, (key, 0)
    key = _norm6(str(ip))
    if ip.scope_id:
        try:
            sockaddr = socket.getaddrinfo(str(ip), None, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[
                0
            ][4]
        except OSError as exc:
            return f"bad IPv6 scope in {text!r}: {exc}"
    else:
        sockaddr = (key, 0, 0, 0)
    return 6, key, sockaddr


def _send_error(exc: OSError) -> tuple[Failure, str]:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    hint = _ERRNO_HINTS.get(code)
    detail = f"sendto failed: {os.strerror(code)} ({name}{': ' + hint if hint else ''})"
    return (UNREACHABLE if code in _UNREACHABLE_ERRNOS else ERROR), detail


class Pinger:
    """Holds one ICMP socket per address family open across batches; see the module docstring.

    ``mode``: None = :func:`probe_privileges`; ``ident``: ICMP identifier (raw) or ping-socket port
    (unprivileged), random/kernel-chosen by default; ``sequence_start``: first sequence number used for
    each new address (random by default; tests pin it). Raises :class:`PingerUnavailable`.

    Several batches may run at the same time on one Pinger (all on the same event loop): they share the
    sockets and the table of outstanding requests, so a batch full of dead hosts only holds up itself.
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
        self._sequence_start = secrets.randbelow(0x10000) if sequence_start is None else sequence_start & 0xFFFF
        self._next_sequence: dict[str, int] = {}
        # (address, sequence) -> (target, send time in ns): the outstanding requests of all running batches
        self._pending: dict[tuple[str, int], tuple[_Target, int]] = {}
        self._channels: dict[int, _Channel] = {}
        self._unavailable: dict[int, str] = {}
        self._active = 0  # running batches; the sockets are watched by the event loop while > 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ignored = 0  # packets read that matched no outstanding request of ours (cumulative)
        self.last_stats: dict[str, float] = {}
        for version in (4, 6):
            try:
                self._channels[version] = _Channel(version, self.mode, ident, rcvbuf)
            except (ICMPSocketError, OSError) as exc:
                if version == 6:  # IPv6 disabled: IPv6 targets fail with "error", IPv4 works
                    self._unavailable[6] = f"no ICMPv6 socket: {exc}"
                    continue
                self.close()
                if isinstance(exc, SocketPermissionError):
                    raise PingerUnavailable(_unavailable_message()) from exc
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

    # -- matching
    def _dispatch(self, channel: _Channel, event: _Event, rx_ns: int) -> None:
        """Apply one decoded packet to the outstanding request it answers, if any."""
        key = (event.address, event.sequence)
        entry = self._pending.get(key)
        if entry is None or event.ident != channel.ident or entry[0].channel is not channel:
            self.ignored += 1  # another program's ping, a late/duplicate reply, a forgery
            return
        target, tx_ns = entry
        batch = target.batch
        if event.kind == "reply":
            if event.payload is None or not event.payload.startswith(self._payload):
                self.ignored += 1  # same address/id/sequence but not our payload: not ours
                return
            target.replies += 1
            target.rtt_ns += max(0, rx_ns - tx_ns)
            batch.replies += 1
        else:
            target.fail(UNREACHABLE if event.kind == "icmp_error" else ERROR, event.detail)
            batch.icmp_errors += 1
        del self._pending[key]
        batch.resolved()

    def _read(self, channel: _Channel, budget: int = _READ_BUDGET) -> int:
        """Read up to ``budget`` queued packets of ``channel`` without blocking and apply them; returns how many.

        Fast path, per packet without icmplib and without objects: an echo reply that carries our identifier
        and payload (raw IPv4: behind a 20-byte IP header) is looked up by (source, sequence) among the
        outstanding requests straight from its bytes, with one ``unpack_from``. Anything else (ICMP errors,
        IP options, other programs' packets, garbage) goes through :meth:`_Channel.decode`, i.e. icmplib's
        parser, and :meth:`_dispatch`, which apply the same checks.
        """
        sock = channel.sock
        if sock.fileno() < 0:
            return 0
        recvmsg = sock.recvmsg
        pending, payload, ident = self._pending, self._payload, channel.ident
        offset = 20 if channel.raw and channel.version == 4 else 0
        need = offset + 8 + len(payload)
        reply_type = channel.echo_reply
        first_byte = 0x45 if offset else reply_type  # raw IPv4: version 4, no IP options
        v6 = channel.version == 6
        unpack_id_seq, unpack_ts, time_ns = _ID_SEQ.unpack_from, _TIMESPEC.unpack_from, time.time_ns
        sol_socket = socket.SOL_SOCKET
        n = 0
        while n < budget:
            try:
                data, anc, _flags, addr = recvmsg(_RECV_SIZE, _ANC_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:  # a pending asynchronous error on a ping socket; details are in the error queue
                n += 1
                continue
            n += 1
            rx_ns = 0
            for level, kind, cdata in anc:
                if kind == _SO_TIMESTAMPNS and level == sol_socket and len(cdata) >= 16:
                    sec, nsec = unpack_ts(cdata)
                    rx_ns = sec * 1_000_000_000 + nsec
            if (
                len(data) >= need
                and data[0] == first_byte
                and data[offset] == reply_type
                and data.startswith(payload, offset + 8)
            ):
                reply_ident, sequence = unpack_id_seq(data, offset + 4)
                if reply_ident == ident:
                    key = (_norm6(addr[0]) if v6 else addr[0], sequence)
                    entry = pending.pop(key, None)
                    if entry is None:
                        self.ignored += 1  # a late or duplicate reply
                        continue
                    target, tx_ns = entry
                    if target.channel is not channel:
                        pending[key] = entry
                        self.ignored += 1
                        continue
                    rtt = (rx_ns or time_ns()) - tx_ns
                    target.replies += 1
                    if rtt > 0:
                        target.rtt_ns += rtt
                    batch = target.batch
                    batch.replies += 1
                    batch.outstanding -= 1
                    if not batch.outstanding and not batch.sending:
                        batch.done.set()
                    continue
            try:
                event = channel.decode(data, addr[0] if addr else "")
            except (ValueError, IndexError, struct.error):  # not a packet of ours, whatever it is
                continue
            if event is not None:
                self._dispatch(channel, event, rx_ns or time_ns())
        if not channel.raw:
            n += channel.read_errors(self._dispatch, budget)
        return n

    def _drain(self, budget: int = _READ_BUDGET) -> int:
        n = 0
        for channel in list(self._channels.values()):
            n += self._read(channel, budget)
        return n

    def _on_readable(self, channel: _Channel) -> None:
        self._read(channel, _READ_BUDGET)

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._active and self._loop is not loop:
            raise RuntimeError("concurrent batches of one Pinger must run on the same event loop")
        if not self._active:
            self._loop = loop
            for channel in self._channels.values():
                loop.add_reader(channel.fd, self._on_readable, channel)
        self._active += 1

    def _end(self, batch: _Batch, targets: list[_Target], count: int) -> None:
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
        return await self._run_batch(list(addresses), count, timeout, interval, asyncio.get_running_loop())

    async def _run_batch(
        self, addresses: list[str], count: int, timeout: float, interval: float, loop: asyncio.AbstractEventLoop
    ) -> dict[str, PingResult]:
        started = time.monotonic()
        ignored_before = self.ignored
        batch = _Batch()
        targets: dict[str, _Target] = {}
        # (address as given, target key or early result); None while every address so far was a distinct
        # canonical IPv4 literal: then the targets alone, in input order, give the results
        wanted: list[tuple[str, str | PingResult]] | None = None
        channel4 = self._channels.get(4)
        inet_pton, af_inet = socket.inet_pton, socket.AF_INET
        for i, text in enumerate(addresses):
            if i % 2048 == 2047:
                await asyncio.sleep(0)
            if channel4 is not None and type(text) is str and text not in targets:
                try:  # the common case, inline: inet_pton only accepts canonical dotted quads
                    inet_pton(af_inet, text)
                except OSError:
                    pass
                else:
                    if text != "0.0.0.0":  # noqa: S104
                        targets[text] = _Target(text, text, channel4, (text, 0), batch)
                        if wanted is not None:
                            wanted.append((text, text))
                        continue
            if wanted is None:
                wanted = [(key, key) for key in targets]
            parsed = _parse_address(text)
            if isinstance(parsed, str):
                wanted.append((text, PingResult(str(text), False, None, 1.0, ERROR, parsed)))
                continue
            version, key, sockaddr = parsed
            channel = self._channels.get(version)
            if channel is None:
                reason = self._unavailable.get(version, "no socket")
                wanted.append((text, PingResult(text, False, None, 1.0, ERROR, reason)))
                continue
            if key not in targets:
                targets[key] = _Target(key, text, channel, sockaddr, batch)
            wanted.append((text, key))

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

        results: dict[str, PingResult] = {}
        make = _result_maker(count, timeout)
        if wanted is None:  # targets are in input order, keyed by the address as given
            for i, (text, target) in enumerate(targets.items()):
                if i % 2048 == 2047:
                    await asyncio.sleep(0)
                results[text] = make(target)
        else:
            built: dict[str, PingResult] = {}
            for i, (text, key) in enumerate(wanted):
                if i % 2048 == 2047:
                    await asyncio.sleep(0)
                if isinstance(key, PingResult):
                    results[text] = key
                    continue
                if key not in built:
                    built[key] = make(targets[key])
                result = built[key]
                results[text] = result if result.address == text else _with_address(result, text)
        self.last_stats = {
            **batch.stats,
            "targets": len(targets),
            "unanswered": batch.outstanding,
            "ignored": self.ignored - ignored_before,
            "duration_s": round(time.monotonic() - started, 4),
        }
        return results

    async def _send_rounds(
        self, batch: _Batch, targets: list[_Target], count: int, interval: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        groups: dict[_Channel, list[_Target]] = {}
        next_sequence, start = self._next_sequence, self._sequence_start
        for target in targets:  # reserve COUNT consecutive sequence numbers per address
            groups.setdefault(target.channel, []).append(target)
            key = target.key
            target.first_sequence = sequence = next_sequence.get(key, start)
            next_sequence[key] = (sequence + count) & 0xFFFF
        for round_number in range(count):
            round_started = loop.time()
            for channel, group in groups.items():
                packet, partial = channel.template(self._payload)
                for first in range(0, len(group), _SEND_CHUNK):
                    i, end = first, min(first + _SEND_CHUNK, len(group))
                    while i < end:
                        if channel.sock.fileno() < 0:
                            for target in group[i:end]:
                                target.fail(ERROR, "pinger closed")
                            break
                        i, failure = self._send_chunk(batch, channel, group, i, end, packet, partial, round_number)
                        if failure is not None:  # rare: the slow path with icmplib's packet, retries and waits
                            await self._send_slow(batch, channel, *failure)
                            i += 1
                    self._drain()
                    await asyncio.sleep(0)
            self._drain()
            if round_number < count - 1:
                await asyncio.sleep(max(0.0, round_started + interval - loop.time()))

    def _send_chunk(
        self,
        batch: _Batch,
        channel: _Channel,
        group: list[_Target],
        i: int,
        end: int,
        packet: bytearray,
        partial: int,
        round_number: int,
    ) -> tuple[int, tuple[_Target, int, OSError] | None]:
        """The hot loop: send the echo requests of ``group[i:end]``, each the batch's template packet with its
        sequence number and checksum patched in place. Stops at the first failed ``sendto``:
        (its index, (target, sequence, error)); else (end, None)."""
        pending = self._pending
        patch, ident, sendto, time_ns = _ECHO_PATCH.pack_into, channel.ident, channel.sock.sendto, time.time_ns
        failure = None
        first = i
        while i < end:
            target = group[i]
            sequence = (target.first_sequence + round_number) & 0xFFFF
            total = partial + sequence
            patch(packet, 2, ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF, ident, sequence)
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

    async def _send_slow(self, batch: _Batch, channel: _Channel, target: _Target, sequence: int, exc: OSError) -> None:
        """A ``sendto`` of the hot loop failed: classify, retry (a full send buffer: drain and wait) or fail."""
        packet = channel.packet(sequence, self._payload)
        tx_ns, error = channel.transmit(packet, target.sockaddr, exc)
        for _attempt in range(_SEND_RETRIES):
            if error is None or error.errno not in _RETRY_LATER_ERRNOS:
                break
            self._drain()  # send buffer full: let replies in and the device queue empty
            await asyncio.sleep(0.001)
            tx_ns, error = channel.transmit(packet, target.sockaddr)
        if error is None:
            self._pending[target.key, sequence] = (target, tx_ns)
            batch.outstanding += 1
            batch.sent += 1
        else:
            target.fail(*_send_error(error))
            batch.send_errors += 1


def _with_address(result: PingResult, address: str) -> PingResult:
    return _new_result(address, result.ok, result.rtt_ms, result.loss, result.failure, result.detail)


def _result_maker(count: int, timeout: float) -> Callable[[_Target], PingResult]:
    """The function that builds the :class:`PingResult` of each target of one batch. Called once per target,
    so kept lean: integer arithmetic for the average, one detail string per distinct (replies, rtt in µs),
    the result's slots set directly (see :func:`_result_constructor`)."""
    details: dict[int, str] = {}
    timeout_detail = f"no reply to {count} echo request{'s' if count > 1 else ''} within {timeout:g} s"
    new, (set_address, set_ok, set_rtt, set_loss, set_failure, set_detail) = _RESULT_SLOTS

    def make(target: _Target) -> PingResult:
        n = target.replies
        if not n:
            if target.errors:
                for kind in (UNREACHABLE, ERROR):
                    for k, detail in target.errors:
                        if k == kind:
                            return _new_result(target.address, False, None, 1.0, kind, detail)
            return _new_result(target.address, False, None, 1.0, TIMEOUT, timeout_detail)
        rtt_us = (target.rtt_ns + 500 * n) // (1000 * n)  # the average, rounded to the µs
        detail = details.get(rtt_us * 128 + n)  # n <= MAX_COUNT < 128
        if detail is None:
            detail = details[rtt_us * 128 + n] = f"{n}/{count} replies, rtt avg {rtt_us / 1000:.3f} ms"
        result = new(PingResult)
        set_address(result, target.address)
        set_ok(result, True)
        set_rtt(result, rtt_us / 1000)
        set_loss(result, 0.0 if n == count else round(1 - n / count, 4))
        set_failure(result, None)
        set_detail(result, detail)
        return result

    return make


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


# ---------------------------------------------------------------------------------------------- command line


async def _cli(args: argparse.Namespace, addresses: list[str]) -> dict:
    pinger = Pinger(args.mode, ident=args.ident, sequence_start=args.sequence_start, rcvbuf=args.rcvbuf)
    lag = {"max": 0.0}

    async def ticker() -> None:  # measures how long the event loop was blocked
        expected = time.monotonic() + 0.005
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            lag["max"] = max(lag["max"], now - expected)
            expected = now + 0.005

    report: dict = {
        "mode": pinger.mode.value,
        "ident": pinger.ident(4),
        "ident6": pinger.ident(6),
        "rcvbuf": pinger.rcvbuf(4),
        "batches": [],
    }
    tick = asyncio.create_task(ticker())
    try:
        for _ in range(args.repeat):
            lag["max"] = 0.0
            cpu, wall = time.process_time(), time.monotonic()
            results = await pinger.ping_batch(addresses, args.count, args.timeout, interval=args.interval)
            max_lag = lag["max"]
            report["batches"].append(
                {
                    "duration_s": round(time.monotonic() - wall, 4),
                    "cpu_s": round(time.process_time() - cpu, 4),
                    "loop_max_lag_ms": round(max_lag * 1000, 2),
                    "stats": pinger.last_stats,
                    "results": {address: result.as_dict() for address, result in results.items()},
                }
            )
    finally:
        tick.cancel()
        pinger.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.pinger", description="Ping addresses in one batch and print the results as JSON."
    )
    parser.add_argument("addresses", nargs="*", help="IP addresses (or give them on stdin with --stdin)")
    parser.add_argument("--stdin", action="store_true", help="read whitespace-separated addresses from stdin")
    parser.add_argument("-c", "--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("-W", "--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("-i", "--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--mode", choices=[m.value for m in PingerMode], default=None)
    parser.add_argument("--ident", type=int, default=None)
    parser.add_argument("--sequence-start", type=int, default=None)
    parser.add_argument("--rcvbuf", type=int, default=DEFAULT_RCVBUF, help="socket receive buffer to ask for (bytes)")
    parser.add_argument("--repeat", type=int, default=1, help="run the batch N times on the same sockets")
    parser.add_argument("--probe", action="store_true", help="only print the usable mode")
    args = parser.parse_args(argv)
    try:
        if args.probe:
            print(json.dumps({"mode": probe_privileges(args.mode).value}))
            return 0
        addresses = args.addresses + (sys.stdin.read().split() if args.stdin else [])
        report = asyncio.run(_cli(args, addresses))
    except PingerUnavailable as exc:
        print(f"pinger: {exc}", file=sys.stderr)
        return 2
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
