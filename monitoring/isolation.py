"""Telling the monitor's own failure from the hosts': is this monitor cut off from a segment?

A segment is the machines of one VNI. Before a round's failures count against machines, the monitor looks
at its own path to each segment in the round:

* **local evidence** (always trusted, and only when nothing of the segment answered): every interface the
  segment's answers used to arrive on is down or gone; the kernel has no route to the segment (ENETUNREACH/
  ENETDOWN on a route lookup); or every send to the segment was refused by the local stack with ENETUNREACH/
  ENETDOWN. EHOSTUNREACH is left out on purpose: the
  kernel also reports it for a single host whose neighbour entry failed, which is the host's fault.
* **the round's pattern**, which alone cannot tell a cut link behind the first hop from a segment whose hosts
  all died: at least VXLANMGR_ISOLATION_MIN machines that answered their last check all fail in one round.
  Then the segment's canary (VXLANMGR_CANARY, e.g. its gateway) decides: silent too means the path is gone;
  answering means the hosts really are down. Without a canary the failures count: a genuine mass failure is
  never hidden, and it still reaches people as one grouped alert.

While cut off, failures do not count and machines keep their status; the first answer (or, after local
evidence, a round whose local path is whole again) ends it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings

LOCAL_ERRNOS = {errno.ENETUNREACH, errno.ENETDOWN}
_LOCAL_ERRNO_NAMES = tuple(f"({errno.errorcode[code]}" for code in LOCAL_ERRNOS)
_SIOCGIFADDR = 0x8915
SYS_NET = Path("/sys/class/net")
ROUTE_SAMPLES = 3


def segment_of(vni: int | None) -> str:
    return f"vni={vni}" if vni is not None else "vni=none"


def parse_canaries(text: str) -> dict[str, str]:
    """VXLANMGR_CANARY: "ADDR" for every segment ("*"), or "VNI=ADDR" terms separated by spaces."""
    canaries = {}
    for term in text.replace(",", " ").split():
        vni, sep, address = term.rpartition("=")
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError(f"VXLANMGR_CANARY: {address!r} is not an IP address") from None
        if sep and not vni.isdigit():
            raise ValueError(f"VXLANMGR_CANARY: {vni!r} is not a VNI")
        canaries[segment_of(int(vni)) if sep else "*"] = address
    return canaries


def refused_locally(failure: str | None, detail: str) -> bool:
    """A send the local stack refused because it has no way to the network."""
    return failure == "unreachable" and detail.startswith("sendto failed") and any(
        name in detail for name in _LOCAL_ERRNO_NAMES
    )


def route_source(address: str) -> tuple[str, str]:
    """(local source address, problem) of the kernel's route to `address`; connecting a UDP socket looks the
    route up without sending a packet."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except OSError as exc:
            if exc.errno in LOCAL_ERRNOS:
                return "", f"no route to {address} ({errno.errorcode.get(exc.errno, exc.errno)})"
            return "", ""
        return probe.getsockname()[0], ""


def interface_of(source: str) -> str:
    """The interface holding IPv4 address `source` ("" when not found or IPv6)."""
    if not source or ":" in source:
        return ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(raw[20:24]) == source:
                return name
    return ""


def link_problem(interface: str) -> str:
    """Why `interface` cannot carry traffic ("" when it is up)."""
    if not interface:
        return ""
    base = SYS_NET / interface
    if not base.exists():
        return f"link {interface} is gone"
    with contextlib.suppress(OSError, ValueError):
        if not int((base / "flags").read_text(), 16) & 0x1:  # IFF_UP
            return f"link {interface} is down"
        if (base / "operstate").read_text().strip() == "down":
            return f"link {interface} has no carrier"
    return ""


@dataclass
class Probe:
    """One machine of a round, as the isolation rules see it."""

    vni: int | None
    address: str
    ok: bool
    failure: str | None
    detail: str
    answered_last_time: bool


@dataclass
class SegmentPath:
    """What the monitor learnt about its path to one segment while it was reachable."""

    interfaces: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)


@dataclass
class Cutoff:
    since: datetime
    reason: str
    local: bool


@dataclass
class Verdict:
    """For one segment in one round: cut off now (reason), still cut off, or rejoined after `length`."""

    segment: str
    isolated: str = ""  # a reason: newly cut off
    held: bool = False  # the round's failures do not count
    rejoined_after: float | None = None  # seconds


@dataclass
class Isolation:
    """The monitor's own-path state across rounds, per segment."""

    minimum: int = field(default_factory=lambda: settings.ISOLATION_MIN)
    canaries: dict[str, str] = field(default_factory=lambda: parse_canaries(settings.CANARY))
    paths: dict[str, SegmentPath] = field(default_factory=dict)
    cut: dict[str, Cutoff] = field(default_factory=dict)

    def canary_for(self, segment: str) -> str:
        return self.canaries.get(segment) or self.canaries.get("*", "")

    def local_problem(self, segment: str, probes: list[Probe]) -> str:
        """Local evidence that the way to this segment is gone, as a reason ("" when the path looks whole).
        Only when nothing in the round answered: one missing route is that host's problem."""
        if any(probe.ok for probe in probes):
            return ""
        learnt = self.paths.get(segment)
        if learnt and learnt.interfaces:
            problems = [link_problem(interface) for interface in sorted(learnt.interfaces)]
            if all(problems):
                return "; ".join(problems)
        # A few distinct addresses are enough: a segment is one subnet, and a lookup is a system call each.
        addresses = list(dict.fromkeys(probe.address for probe in probes))[:ROUTE_SAMPLES]
        problems = [route_source(address)[1] for address in addresses]
        if all(problems):
            return problems[0]
        if all(refused_locally(probe.failure, probe.detail) for probe in probes):
            return f"the local stack refused every send ({probes[0].detail})"
        return ""

    def learn(self, segment: str, probes: list[Probe]) -> None:
        """Remember the interface answers from this segment come back on, to watch its link."""
        answered = next((probe for probe in probes if probe.ok), None)
        if answered is None:
            return
        learnt = self.paths.setdefault(segment, SegmentPath())
        source, _problem = route_source(answered.address)
        if source and source not in learnt.sources:
            learnt.sources.add(source)
            if interface := interface_of(source):
                learnt.interfaces.add(interface)

    def suspicious(self, probes: list[Probe]) -> bool:
        """The pattern: every machine that answered last time fails now, and there are enough of them."""
        answered_before = sum(probe.answered_last_time for probe in probes)
        return answered_before >= self.minimum and not any(probe.ok for probe in probes)

    async def judge(self, segment: str, probes: list[Probe], now: datetime, canary_answers=None) -> Verdict:
        """Decide one segment's round. `await canary_answers(address)` pings the canary, only when needed."""
        verdict = Verdict(segment)
        cutoff = self.cut.get(segment)
        if cutoff is not None:
            if any(probe.ok for probe in probes) or (cutoff.local and not self.local_problem(segment, probes)):
                del self.cut[segment]
                verdict.rejoined_after = (now - cutoff.since).total_seconds()
                # This round's failures are still from the cut: the next round judges afresh.
                verdict.held = not all(probe.ok for probe in probes)
            else:
                verdict.held = True
            return verdict
        if all(probe.ok for probe in probes):
            self.learn(segment, probes)
            return verdict
        reason, local = self.local_problem(segment, probes), True
        if not reason and self.suspicious(probes):
            canary = self.canary_for(segment)
            if canary and canary_answers is not None and not await canary_answers(canary):
                answered = sum(probe.answered_last_time for probe in probes)
                reason = f"none of {answered} machines that answered last time, nor the canary {canary}, answered"
                local = False
        if reason:
            self.cut[segment] = Cutoff(now, reason, local)
            verdict.isolated = reason
            verdict.held = True
        else:
            self.learn(segment, probes)
        return verdict

    def snapshot(self) -> dict:
        return {segment: {"since": cut.since.isoformat(), "reason": cut.reason} for segment, cut in self.cut.items()}
