"""The bookkeeping of one batch: its targets, its counters, and the way from input addresses to targets
and from targets back to results in input order.

A batch pings each distinct address once per round, whatever text it was given as (``::1`` and
``0:0:0:0:0:0:0:1`` are one target); the results are keyed by the addresses as given, including the
invalid ones, which fail with "error" without being sent anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Callable

from .codec import norm6
from .results import ERROR, Failure, PingResult
from .sockets import Channel


class Target:
    """One distinct address of a batch. Kept small (few objects per target: less for the garbage collector):
    replies are counted and their round-trip times summed, the error list exists only once there is one."""

    __slots__ = ("address", "batch", "channel", "errors", "first_sequence", "key", "replies", "rtt_ns", "sockaddr")

    def __init__(self, key: str, address: str, channel: Channel, sockaddr: tuple, batch: Batch):
        self.key = key  # the normalised address: the requests' lookup key with their sequence numbers
        self.address = address  # as first given
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


class Batch:
    __slots__ = ("done", "icmp_errors", "outstanding", "replies", "send_errors", "sending", "sent")

    def __init__(self):
        self.outstanding = 0  # requests sent and neither answered nor failed yet
        self.sending = True
        self.done = asyncio.Event()  # set once nothing is outstanding after the last send
        self.sent = self.replies = self.icmp_errors = self.send_errors = 0

    @property
    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "replies": self.replies,
            "icmp_errors": self.icmp_errors,
            "send_errors": self.send_errors,
        }


def parse_address(text: str) -> tuple[int, str, tuple] | str:
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
    key = norm6(str(ip))
    if ip.scope_id:
        try:
            info = socket.getaddrinfo(str(ip), None, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
        except OSError as exc:
            return f"bad IPv6 scope in {text!r}: {exc}"
        sockaddr = info[0][4]
    else:
        sockaddr = (key, 0, 0, 0)
    return 6, key, sockaddr


# (address as given, target key or early result), in input order
Wanted = list[tuple[str, str | PingResult]]


async def plan(
    addresses: list[str], channels: dict[int, Channel], unavailable: dict[int, str], batch: Batch
) -> tuple[dict[str, Target], Wanted | None]:
    """The targets of a batch, by key, and what to return for each address given.

    The second value is None while every address is a distinct canonical IPv4 literal, the monitor's
    common case: then the targets alone, in input order, give the results. Such addresses are recognised
    inline with ``inet_pton`` (it only accepts canonical dotted quads) rather than by :func:`parse_address`,
    a function call and a tuple per address less. Yields to the event loop every 2,048 addresses.
    """
    targets: dict[str, Target] = {}
    wanted: Wanted | None = None
    channel4 = channels.get(4)
    inet_pton, af_inet = socket.inet_pton, socket.AF_INET
    for i, text in enumerate(addresses):
        if i % 2048 == 2047:
            await asyncio.sleep(0)
        if channel4 is not None and type(text) is str and text not in targets:
            try:
                inet_pton(af_inet, text)
            except OSError:
                pass
            else:
                if text != "0.0.0.0":  # noqa: S104
                    targets[text] = Target(text, text, channel4, (text, 0), batch)
                    if wanted is not None:
                        wanted.append((text, text))
                    continue
        if wanted is None:
            wanted = [(key, key) for key in targets]
        parsed = parse_address(text)
        if isinstance(parsed, str):
            wanted.append((text, PingResult(str(text), False, None, 1.0, ERROR, parsed)))
            continue
        version, key, sockaddr = parsed
        channel = channels.get(version)
        if channel is None:
            reason = unavailable.get(version, "no socket")
            wanted.append((text, PingResult(text, False, None, 1.0, ERROR, reason)))
            continue
        if key not in targets:
            targets[key] = Target(key, text, channel, sockaddr, batch)
        wanted.append((text, key))
    return targets, wanted


async def assemble(
    targets: dict[str, Target], wanted: Wanted | None, make: Callable[[Target], PingResult]
) -> dict[str, PingResult]:
    """``{address as given: PingResult}`` in input order, each target's result built once by ``make``."""
    results: dict[str, PingResult] = {}
    if wanted is None:  # targets are in input order, keyed by the address as given
        for i, (text, target) in enumerate(targets.items()):
            if i % 2048 == 2047:
                await asyncio.sleep(0)
            results[text] = make(target)
        return results
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
        # another spelling of an address given before ("::1" after "0:0:0:0:0:0:0:1"): rare
        results[text] = result if result.address == text else dataclasses.replace(result, address=text)
    return results
