"""The ICMP echo codec: the echo requests we send, and decoding what comes back.

Echo request and reply (RFC 792 for ICMPv4, RFC 4443 for ICMPv6)::

    type (8 / 128 request, 0 / 129 reply) | code 0 | checksum | identifier | sequence | payload

all fields big-endian, the checksum the one's complement of the one's-complement sum of the 16-bit words
of the ICMP message (RFC 1071). For ICMPv6 the kernel fills in the checksum (it covers a pseudo-header we
do not know), so the value we put there does not matter; we build both families the same way. Our payload
is ``vxlanmgr`` plus an 8-byte random token of the :class:`~monitoring.icmp.engine.Pinger`, so that a reply
proves it answers one of our requests.

Sending: every request of a channel differs only in its sequence number, so the packet is built once
(:func:`echo_template`) and for each request its sequence and checksum are written in place
(:func:`stamp`): the checksum of the changed packet follows from the sum of the unchanged words and the
new word alone (RFC 1624), so no per-packet sum over the payload. The tests compare the result, for
every sequence number, with the request built in full (:func:`echo_request`) and with what icmplib sends.

What a socket delivers (Linux):

* raw IPv4 (``SOCK_RAW``): the IPv4 header, then the ICMP message; every ICMP packet of the namespace
  (the kernel type filter set in :mod:`~monitoring.icmp.sockets` lets only replies and errors through);
* raw IPv6: the ICMPv6 message alone (the kernel strips the IPv6 header);
* ping sockets (``SOCK_DGRAM``, both families): the ICMP message alone, only echo replies whose
  identifier is the socket's "port" (the kernel writes that port into every request we send). ICMP errors
  about our requests go to the socket's error queue (``IP_RECVERR``): the original request as data, the
  error's type, code and reporter in a ``struct sock_extended_err``; see :func:`decode_queued_error`.

Decoding turns a packet into an :data:`Event`, ``(kind, (address, sequence), identifier, detail)``, or None
when it is not about an echo request: the engine matches the ``(address, sequence)`` key against its
outstanding requests and checks the identifier. ``address`` is the replier for a reply and the original
destination for an error, normalised like the engine's keys (IPv6 through :func:`norm6`).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import struct
from collections.abc import Callable

from icmplib import ICMPReply
from icmplib.exceptions import ICMPError

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# ICMP errors that quote the datagram they are about: destination unreachable, time exceeded, parameter
# problem (IPv4); destination unreachable, packet too big, time exceeded, parameter problem (IPv6).
ERROR_TYPES = {4: frozenset({3, 11, 12}), 6: frozenset({1, 2, 3, 4})}

REPLY, ICMP_ERROR, LOCAL_ERROR = "reply", "icmp_error", "local_error"
Event = tuple[str, tuple[str, int], int, str | None]  # kind, (address, sequence), identifier, error detail
Decoder = Callable[[bytes, str], Event | None]
NOT_OURS = -1  # the identifier given to an echo reply without our payload: it matches no request

ECHO_PATCH = struct.Struct("!HHH")  # checksum, identifier, sequence: bytes 2-7 of an echo message
_ECHO_HEADER = struct.Struct("!BBHHH")
_ID_SEQ = struct.Struct("!HH")

# Linux constants the socket module does not export.
SOL_IP, SOL_IPV6 = 0, 41
IP_RECVERR, IPV6_RECVERR = 11, 25
_SO_EE_ORIGIN_LOCAL = 1
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


# ---------------------------------------------------------------------------------------------- encoding


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _word_sum(data: bytes) -> int:
    """The one's-complement sum of the 16-bit big-endian words of ``data`` (odd length: padded with 0)."""
    if len(data) % 2:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    return ~_word_sum(data) & 0xFFFF


def echo_request(version: int, ident: int, sequence: int, payload: bytes) -> bytes:
    """One echo request, built field by field (the reference for :func:`echo_template` + :func:`stamp`)."""
    message = _ECHO_HEADER.pack(ECHO_REQUEST[version], 0, 0, ident, sequence) + payload
    return message[:2] + checksum(message).to_bytes(2, "big") + message[4:]


def echo_template(version: int, ident: int, payload: bytes) -> tuple[bytearray, int]:
    """(packet, partial sum): the echo request with sequence 0, and the one's-complement sum of its words
    without the checksum. :func:`stamp` turns it into the request for any sequence number."""
    packet = bytearray(echo_request(version, ident, 0, payload))
    return packet, _word_sum(bytes(packet[:2] + b"\0\0" + packet[4:]))


def stamp(packet: bytearray, partial: int, ident: int, sequence: int) -> None:
    """Make the template ``packet`` the request for ``sequence``: write the sequence and the checksum
    ``~fold(partial + sequence)`` (RFC 1624). One fold is enough: both terms are at most 0xFFFF."""
    total = partial + sequence
    ECHO_PATCH.pack_into(packet, 2, ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF, ident, sequence)


# ---------------------------------------------------------------------------------------------- decoding


@functools.lru_cache(maxsize=65536)
def norm6(address: str) -> str:
    """The canonical text of an IPv6 address, without a scope (``fd00:0::7%eth0`` -> ``fd00::7``)."""
    return str(ipaddress.IPv6Address(address.split("%", 1)[0]))


def make_decoder(version: int, raw: bool, payload: bytes) -> Decoder:
    """The decoder for the normal receive queue of one socket: ``decode(packet, source) -> Event | None``.

    Its first branch is the common case, an echo reply that carries ``payload`` (raw IPv4: behind a 20-byte
    IP header): checked and decoded at fixed offsets, with one ``unpack_from`` and no objects besides the
    event. At 10,000 targets decoding costs about as much per reply as the kernel's ``recvmsg``, hence the
    settings bound once here. Anything else (IP options, a foreign payload, ICMP errors, garbage) takes
    the general branch. Raises only ValueError, IndexError or struct.error, on packets that are not ours.
    """
    offset = 20 if raw and version == 4 else 0  # raw IPv4 sockets deliver the IP header
    reply_type = ECHO_REPLY[version]
    first_byte = 0x45 if offset else reply_type  # raw IPv4: version 4, header of 5 words (no options)
    id_at, payload_at = offset + 4, offset + 8
    v6 = version == 6
    unpack_id_seq = _ID_SEQ.unpack_from

    def decode(data: bytes, source: str) -> Event | None:
        # startswith first: it also proves the packet long enough for the other checks and the unpack
        if data.startswith(payload, payload_at) and data[0] == first_byte and data[offset] == reply_type:
            ident, sequence = unpack_id_seq(data, id_at)
            return REPLY, (norm6(source) if v6 else source, sequence), ident, None
        return _decode_general(version, raw, payload, data, source)

    return decode


def _decode_general(version: int, raw: bool, payload: bytes, data: bytes, source: str) -> Event | None:
    if raw and version == 4:
        ihl = (data[0] & 0x0F) * 4 if data else 0
        if ihl < 20 or len(data) < ihl:
            return None
        data = data[ihl:]
    if len(data) < 8:
        return None
    icmp_type, code = data[0], data[1]
    if icmp_type == ECHO_REPLY[version]:
        ident, sequence = _ID_SEQ.unpack_from(data, 4)
        if not data.startswith(payload, 8):
            ident = NOT_OURS  # another program's ping or a forgery: still a reply, counted as ignored
        return REPLY, (source if version == 4 else norm6(source), sequence), ident, None
    if raw and icmp_type in ERROR_TYPES[version]:  # ping sockets get their errors through the error queue
        return _decode_quoted(version, payload, data[8:], icmp_type, code, source)
    return None


def _decode_quoted(
    version: int, payload: bytes, inner: bytes, icmp_type: int, code: int, reporter: str
) -> Event | None:
    """The datagram quoted by an ICMP error seen on a raw socket: was it one of our echo requests? Only an error
    quoting our payload counts: a host that sees our requests must not be able to fail another host's check."""
    if version == 4:
        if len(inner) < 20 or inner[9] != socket.IPPROTO_ICMP:
            return None
        destination = socket.inet_ntop(socket.AF_INET, inner[16:20])
        quoted = inner[(inner[0] & 0x0F) * 4 :]
    else:
        if len(inner) < 40 or inner[6] != socket.IPPROTO_ICMPV6:
            return None
        destination = norm6(socket.inet_ntop(socket.AF_INET6, inner[24:40]))
        quoted = inner[40:]
    if len(quoted) < 8 or quoted[0] != ECHO_REQUEST[version] or not quoted.startswith(payload, 8):
        return None
    ident, sequence = _ID_SEQ.unpack_from(quoted, 4)
    return ICMP_ERROR, (destination, sequence), ident, error_text(version, icmp_type, code, reporter)


def decode_queued_error(version: int, payload: bytes, data: bytes, anc: list, addr: tuple | None) -> Event | None:
    """An entry of a ping socket's error queue: ``data`` is our request as the error quoted it (it must carry
    our payload), ``addr`` its destination, the ancillary ``IP_RECVERR`` / ``IPV6_RECVERR`` message says what
    went wrong and who reported it."""
    if len(data) < 8 or not addr or not data.startswith(payload, 8):
        return None
    ident, sequence = _ID_SEQ.unpack_from(data, 4)
    key = (addr[0] if version == 4 else norm6(addr[0]), sequence)
    for level, kind, cdata in anc:
        if (level, kind) not in {(SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)} or len(cdata) < _EXTENDED_ERR.size:
            continue
        ee_errno, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(cdata)
        if origin == _SO_EE_ORIGIN_LOCAL:
            name = errno.errorcode.get(ee_errno, str(ee_errno))
            text = os.strerror(ee_errno) if ee_errno < 4096 else "unknown error"
            return LOCAL_ERROR, key, ident, f"local error: {text} ({name})"
        reporter = None
        offender = cdata[_EXTENDED_ERR.size :]  # the sockaddr of the host that sent the ICMP error
        if version == 4 and len(offender) >= 8 and offender[:2] != b"\0\0":
            reporter = socket.inet_ntop(socket.AF_INET, offender[4:8])
        elif version == 6 and len(offender) >= 24 and offender[:2] != b"\0\0":
            reporter = norm6(socket.inet_ntop(socket.AF_INET6, offender[8:24]))
        return ICMP_ERROR, key, ident, error_text(version, icmp_type, code, reporter)
    return None


def error_text(version: int, icmp_type: int, code: int, reporter: str | None) -> str:
    """``"Destination host unreachable (ICMP type 3 code 1) from 192.0.2.1"``: icmplib's name of the error
    (its public ``ICMPReply.raise_for_status``), the numbers, and who reported it."""
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
