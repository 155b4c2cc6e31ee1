"""The ICMP sockets: which kind this process may open, and one configured socket per address family.

* Two kinds (:class:`PingerMode`): kernel "ping" sockets (``SOCK_DGRAM``, ``privileged=False`` in icmplib)
  when ``net.ipv4.ping_group_range`` admits our group, else raw sockets (``SOCK_RAW``, root or
  CAP_NET_RAW); see :func:`probe_privileges`. icmplib's ``ICMPv4Socket``/``ICMPv6Socket`` open them (their
  exceptions tell a missing privilege from other failures); from then on the engine uses the plain
  socket: ``sendto`` keeps the kernel's errno (icmplib's ``send()`` folds it into a string) and runs no
  ``getaddrinfo`` per packet.
* On a ping socket the kernel rewrites the identifier of every request to the socket's "port" and only
  delivers replies carrying it, so the identifier is that port (bound to ``ident`` when one is asked for).
  ICMP errors come through the socket's error queue (``IP_RECVERR``), one per request.
* A raw socket sees every ICMP packet of the namespace: a kernel type filter lets only echo replies and
  the errors of :data:`~monitoring.icmp.codec.ERROR_TYPES` through; the identifier is ours to choose.
* The receive side must keep up while a batch is still sending: SO_RCVBUF is raised to 8 MiB
  (SO_RCVBUFFORCE when allowed, otherwise capped by net.core.rmem_max), and RTTs use kernel receive
  timestamps (SO_TIMESTAMPNS), so a reply that waits in the queue while we are still sending is not
  penalised.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import struct
import sys
import time

from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPSocketError

from . import codec

DEFAULT_RCVBUF = 8 * 1024 * 1024
RECV_SIZE = 512  # enough for our replies and for the headers an ICMP error quotes
ANC_SIZE = 256  # room for a timestamp, or an extended error with the reporter's address
RETRY_LATER_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS}  # the send buffer or device queue is full

# Linux constants the socket module does not export.
_SOL_RAW = 255
_ICMP_FILTER, _ICMP6_FILTER = 1, 1
_SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
MSG_ERRQUEUE = 0x2000


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


def unavailable_message() -> str:
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
            f"{mode.value} ICMP sockets are not available ({reasons[mode]}); {unavailable_message()}"
        )
    raise PingerUnavailable(unavailable_message())


# ---------------------------------------------------------------------------------------------- channels


class Channel:
    """One ICMP socket (one address family) with what the engine needs to send and decode on it.

    ``decode`` decodes the normal receive queue (:func:`codec.make_decoder`); ``packet``/``partial`` are the
    echo request template and its partial sum (:func:`codec.echo_template`). :func:`open_channel` makes one
    around a real socket; the tests make them around stand-ins.
    """

    def __init__(
        self, version: int, raw: bool, sock: socket.socket, ident: int, payload: bytes, icmp: object | None = None
    ):
        self.version = version
        self.raw = raw
        self.sock = sock
        self.fd = sock.fileno()
        self.ident = ident
        self.payload = payload
        self.icmp = icmp  # icmplib's socket object that opened ``sock``: it closes ``sock`` when collected
        self.decode = codec.make_decoder(version, raw, payload)
        self.packet, self.partial = codec.echo_template(version, ident, payload)

    def close(self) -> None:
        self.sock.close()

    @property
    def rcvbuf(self) -> int:
        """The effective receive buffer in bytes, as the kernel reports it."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def request(self, sequence: int) -> bytes:
        """The echo request for ``sequence`` built in full, for the careful send path: it may be resent after
        waits, while other sends keep stamping the template."""
        return codec.echo_request(self.version, self.ident, sequence, self.payload)

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
            if failed.errno in RETRY_LATER_ERRNOS or self.raw:
                return 0, failed
            last, attempts = failed, 2
        for _ in range(attempts):
            tx_ns = time.time_ns()
            try:
                self.sock.sendto(packet, sockaddr)
            except OSError as exc:
                if exc.errno in RETRY_LATER_ERRNOS or self.raw or (last is not None and last.errno == exc.errno):
                    return 0, exc
                last = exc
                continue
            return tx_ns, None
        return 0, last

    def discard(self, budget: int) -> int:
        """Drop up to ``budget`` queued packets (and queued errors) unread: replies nobody waits for."""
        n = 0
        for flags in (0,) if self.raw else (0, MSG_ERRQUEUE):
            while n < budget:
                try:
                    self.sock.recvmsg(RECV_SIZE, ANC_SIZE, flags)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # a pending asynchronous error on a ping socket; counted like a packet
                    pass
                n += 1
        return n


def open_channel(version: int, mode: PingerMode, ident: int | None, rcvbuf: int, payload: bytes) -> Channel:
    """Open and configure the ICMP socket of one address family. ``ident``: the identifier of a raw socket
    (required), the port to bind a ping socket to (None: the kernel picks one)."""
    raw = mode is PingerMode.RAW
    icmp = (ICMPv4Socket if version == 4 else ICMPv6Socket)(privileged=raw)
    sock = icmp.sock
    try:
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # needs CAP_NET_ADMIN; then the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if raw:
            passed = (codec.ECHO_REPLY[version], *codec.ERROR_TYPES[version])
            if version == 4:  # a bit set = that type blocked
                blocked = 0xFFFFFFFF & ~sum(1 << t for t in passed)
                sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("=I", blocked))
            else:
                words = [0xFFFFFFFF] * 8
                for t in passed:
                    words[t >> 5] &= ~(1 << (t & 31))
                sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))
        else:
            if version == 4:
                sock.setsockopt(codec.SOL_IP, codec.IP_RECVERR, 1)
            else:
                sock.setsockopt(codec.SOL_IPV6, codec.IPV6_RECVERR, 1)
            if ident:  # the IPv4 and IPv6 ping sockets share one identifier space
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0" if version == 4 else "::", ident or 0))  # noqa: S104 (ICMP "port" = ident)
            ident = sock.getsockname()[1]
        return Channel(version, raw, sock, ident, payload, icmp)
    except BaseException:
        icmp.close()
        raise
