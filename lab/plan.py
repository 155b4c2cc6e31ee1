"""The lab's topology as data: its configuration, the plan of namespaces and addresses, and the settings its
manager runs with. Nothing here touches the system."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "register-machine.sh"
NS_PREFIX = "vxlab-"
VXLAN_DEV_PREFIX = "vxlan"
UNDERLAY_DEV = "eth0"
BRIDGE = "br0"
MULTICAST_GROUP = "239.1.1.1"
PG_SOCKET_DIR = "/var/run/postgresql"
FIRST_HOST = 11  # host N gets .(10 + N) on both networks; the manager gets .1, the monitors .2 (and up)
MAX_SEGMENTS = 8  # VNIs of one lab: their monitors take .2 to .9 of the underlay

# Snappy monitoring for the lab; each can be overridden from the environment of `vxlanlab up`.
MONITOR_DEFAULTS = {
    "VXLANMGR_CHECK_INTERVAL": "5",
    "VXLANMGR_RETRY_INTERVAL": "2",
    "VXLANMGR_FAILURE_THRESHOLD": "3",
    "VXLANMGR_PING_TIMEOUT": "1",
    "VXLANMGR_BACKOFF_MAX": "30",
}
PASSED_THROUGH = (
    "VXLANMGR_PING_COUNT", "VXLANMGR_LOG_LEVEL", "VXLANMGR_TIME_ZONE", "VXLANMGR_DEBUG", "VXLANMGR_MAX_MACHINES",
    "VXLANMGR_NOTIFY_GROUP_THRESHOLD", "VXLANMGR_NOTIFY_GROUP_WINDOW", "VXLANMGR_FLAP_LIMIT",
    "VXLANMGR_MONITOR_STALE", "VXLANMGR_NOTIFY_MAX_AGE", "VXLANMGR_ISOLATION_MIN", "VXLANMGR_CANARY",
)
# The lab's webhook receiver (lab/receiver.py) listens on the manager namespace's loopback: web and monitor run
# in that namespace and reach it, nothing else can. Its Apprise URL is the lab manager's VXLANMGR_NOTIFY_URLS.
RECEIVER_PORT = 8025
RECEIVER_URL = f"json://127.0.0.1:{RECEIVER_PORT}/alerts"
REQUIRED_TOOLS = {
    "ip": "iproute2", "sysctl": "procps", "socat": "socat", "curl": "curl", "sh": "dash", "unshare": "util-linux",
}
# With --monitors the lab runs a Redis of its own on a Unix socket in its directory, the one place web and monitors
# in their namespaces all reach (none of them has a route to a Redis on the host's 127.0.0.1).
MONITOR_TOOLS = {"redis-server": "redis-server"}


class LabError(RuntimeError):
    """Something the operator has to fix or know; the message says what."""


# ---------------------------------------------------------------------------------------------- the plan


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "lab"
    hosts: int = 5
    vni: int = 100
    overlay: str = "10.100.0.0/24"
    underlay: str = "192.168.100.0/24"
    port: int = 8800  # the loopback forwarder: http://127.0.0.1:PORT/
    manager_port: int = 8000  # the manager's TCP endpoint on its overlay address
    # Several overlays (`--vnis 100,200`): each VNI its own vxlan link and subnet, the hosts split between them.
    # Empty: the one overlay of `vni` and `overlay`.
    vnis: tuple[int, ...] = ()
    overlays: tuple[str, ...] = ()  # one per VNI; empty: 10.(VNI mod 256).0.0/24 each
    # Monitors in namespaces of their own, one per VNI (`--monitors N`, N = the number of VNIs), the web process
    # alone in the manager's namespace; 0: one manager process that monitors too.
    monitors: int = 0

    def __post_init__(self) -> None:
        # Read back from JSON these are lists; as tuples the configuration stays hashable and compares equal.
        object.__setattr__(self, "vnis", tuple(self.vnis))
        object.__setattr__(self, "overlays", tuple(self.overlays))

    @property
    def segments(self) -> list[tuple[int, str]]:
        """(VNI, overlay subnet) of every overlay, in order."""
        if not self.vnis:
            return [(self.vni, self.overlay)]
        overlays = self.overlays or tuple(f"10.{vni % 256}.0.0/24" for vni in self.vnis)
        return list(zip(self.vnis, overlays, strict=False))

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,12}", self.name):
            raise LabError(f"the lab name must be 1-12 lowercase letters or digits, got {self.name!r}")
        if not 1 <= self.hosts <= 50:
            raise LabError(f"--hosts must be from 1 to 50, got {self.hosts}")
        flag = "--vnis" if self.vnis else "--vni"
        if self.vnis and not 1 <= len(self.vnis) <= MAX_SEGMENTS:
            raise LabError(f"--vnis takes 1 to {MAX_SEGMENTS} VNIs, got {len(self.vnis)}")
        if len(set(self.vnis)) != len(self.vnis):
            raise LabError(f"--vnis lists a VNI twice: {','.join(map(str, self.vnis))}")
        if self.overlays and len(self.overlays) != len(self.vnis):
            raise LabError(f"--overlay needs one subnet per VNI ({len(self.vnis)}), got {len(self.overlays)}")
        segments = self.segments
        if self.hosts < len(segments):
            raise LabError(f"--hosts must be at least the number of VNIs ({len(segments)}), got {self.hosts}")
        if self.monitors not in (0, len(segments)):
            raise LabError(
                f"--monitors runs one monitor per VNI: give {len(segments)} (or leave it out), got {self.monitors}"
            )
        for vni, _overlay in segments:
            if not 1 <= vni <= 0xFFFFFF:
                raise LabError(f"{flag} must be from 1 to 16777215, got {vni}")
        for port, option in ((self.port, "--port"), (self.manager_port, "--manager-port")):
            if not 1 <= port <= 65535:
                raise LabError(f"{option} must be from 1 to 65535, got {port}")
        networks = []
        for text, option in [*((overlay, "--overlay") for _vni, overlay in segments), (self.underlay, "--underlay")]:
            try:
                network = ipaddress.IPv4Network(text)
            except ValueError as exc:
                raise LabError(f"{option} must be an IPv4 network such as 10.100.0.0/24: {exc}") from None
            if not network.is_private or network.is_loopback or network.is_link_local or network.is_multicast:
                raise LabError(f"{option} must be a private range (10/8, 172.16/12, 192.168/16), got {network}")
            # Host N has .(10 + N) on the underlay and on its overlay, whichever overlay that is.
            if network.num_addresses - 2 < FIRST_HOST - 1 + self.hosts:
                raise LabError(f"{option} {network} is too small for {self.hosts} hosts")
            networks.append(network)
        for i, first in enumerate(networks):
            for second in networks[i + 1:]:
                if first.overlaps(second):
                    raise LabError(
                        f"{first} and {second} overlap: every overlay and the underlay need subnets of their own"
                        + (" (give --overlay A,B,…)" if self.vnis and not self.overlays else "")
                    )


def host_counts(hosts: int, segments: int) -> list[int]:
    """How many hosts each overlay gets: the hosts in order, split as evenly as they go (5 on 2: 3 and 2)."""
    return [hosts // segments + (1 if i < hosts % segments else 0) for i in range(segments)]


@dataclasses.dataclass(frozen=True)
class Segment:
    """One overlay: a VNI, its subnet and its vxlan link (the same name in every namespace on it)."""

    vni: int
    overlay: str
    vxlan_dev: str
    manager_overlay_ip: str  # .1: the manager's address on this overlay, where its hosts register
    monitor_overlay_ip: str  # .2: the address of this VNI's monitor (with --monitors)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.overlay).prefixlen


@dataclasses.dataclass(frozen=True)
class Host:
    key: str  # h1, h2, …
    namespace: str
    hostname: str
    underlay_ip: str
    overlay_ip: str
    vni: int = 0
    vxlan_dev: str = ""


@dataclasses.dataclass(frozen=True)
class MonitorNode:
    """A monitor on a "machine" of its own: a namespace with its own underlay address and vxlan link of its VNI."""

    vni: int
    name: str  # `manage.py monitor --name`, the heartbeat's name: lab-monitor-100
    namespace: str
    hostname: str  # its own UTS host name, which the heartbeat records as its host
    underlay_ip: str
    overlay_ip: str
    vxlan_dev: str

    @property
    def scope(self) -> str:
        return f"vni={self.vni}"


@dataclasses.dataclass(frozen=True)
class Plan:
    config: Config
    switch: str
    manager: str
    manager_underlay_ip: str
    manager_overlay_ip: str  # on the first overlay
    hosts: tuple[Host, ...]
    segments: tuple[Segment, ...] = ()
    monitors: tuple[MonitorNode, ...] = ()

    @property
    def prefix(self) -> str:
        return namespace_prefix(self.config.name)

    @property
    def vxlan_dev(self) -> str:
        """The first overlay's vxlan link (the only one without --vnis)."""
        return self.segments[0].vxlan_dev

    @property
    def overlay_prefixlen(self) -> int:
        return self.segments[0].prefixlen

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.config.underlay).prefixlen

    @property
    def manager_url(self) -> str:
        """Where the first overlay's hosts send their registrations: the manager's overlay address."""
        return self.manager_url_for(self.segments[0].vni)

    def manager_url_for(self, vni: int) -> str:
        """Where a host on this VNI registers: the manager's address on that host's overlay."""
        return f"http://{self.segment(vni).manager_overlay_ip}:{self.config.manager_port}"

    @property
    def manager_overlay_ips(self) -> list[str]:
        return [segment.manager_overlay_ip for segment in self.segments]

    @property
    def namespaces(self) -> list[str]:
        return [
            self.switch, self.manager, *(node.namespace for node in self.monitors),
            *(host.namespace for host in self.hosts),
        ]

    def segment(self, vni: int) -> Segment:
        for segment in self.segments:
            if segment.vni == vni:
                return segment
        known = ", ".join(str(segment.vni) for segment in self.segments)
        raise LabError(f"the lab has no VNI {vni}; its VNIs are {known}")

    def hosts_on(self, vni: int) -> list[Host]:
        return [host for host in self.hosts if host.vni == vni]

    def monitor(self, ref: str | int) -> MonitorNode:
        """A monitor by VNI (100), name (lab-monitor-100) or namespace."""
        ref = str(ref).strip()
        for node in self.monitors:
            if ref in {str(node.vni), node.name, node.namespace, node.hostname}:
                return node
        if not self.monitors:
            raise LabError("this lab runs no monitors of their own (start it with --vnis … --monitors N)")
        known = ", ".join(str(node.vni) for node in self.monitors)
        raise LabError(f"no lab monitor {ref!r}; the monitors are those of VNI {known}")

    def find(self, ref: str) -> Host:
        """A host by key (h2), number (2), host name, overlay or underlay IP, or namespace."""
        ref = ref.strip()
        for host in self.hosts:
            if ref in {host.key, host.key[1:], host.hostname, host.overlay_ip, host.underlay_ip, host.namespace}:
                return host
        known = ", ".join(host.key for host in self.hosts)
        raise LabError(f"no lab host {ref!r}; the hosts are {known} (or their host names or overlay IPs)")


def namespace_prefix(name: str) -> str:
    return f"{NS_PREFIX}{name}-"


def make_plan(config: Config) -> Plan:
    """The names and addresses of everything in the lab; a pure function of the configuration."""
    config.validate()
    underlay = ipaddress.IPv4Network(config.underlay)
    prefix = namespace_prefix(config.name)
    segments = tuple(
        Segment(
            vni=vni,
            overlay=overlay,
            vxlan_dev=f"{VXLAN_DEV_PREFIX}{vni}"[:15],
            manager_overlay_ip=str(ipaddress.IPv4Network(overlay).network_address + 1),
            monitor_overlay_ip=str(ipaddress.IPv4Network(overlay).network_address + 2),
        )
        for vni, overlay in config.segments
    )
    sizes = host_counts(config.hosts, len(segments))
    hosts = []
    for segment, size in zip(segments, sizes, strict=True):
        overlay = ipaddress.IPv4Network(segment.overlay)
        for n in range(len(hosts) + 1, len(hosts) + size + 1):
            hosts.append(
                Host(
                    key=f"h{n}",
                    namespace=f"{prefix}h{n}",
                    hostname=f"{config.name}-h{n}",
                    underlay_ip=str(underlay.network_address + FIRST_HOST - 1 + n),
                    overlay_ip=str(overlay.network_address + FIRST_HOST - 1 + n),
                    vni=segment.vni,
                    vxlan_dev=segment.vxlan_dev,
                )
            )
    monitors = tuple(
        MonitorNode(
            vni=segment.vni,
            name=f"{config.name}-monitor-{segment.vni}",
            namespace=f"{prefix}mon{segment.vni}",
            hostname=f"{config.name}-mon{segment.vni}",
            underlay_ip=str(underlay.network_address + 2 + i),  # .2, .3, …: below the hosts' .11 and up
            overlay_ip=segment.monitor_overlay_ip,
            vxlan_dev=segment.vxlan_dev,
        )
        for i, segment in enumerate(segments[: config.monitors])
    )
    return Plan(
        config=config,
        switch=f"{prefix}sw",
        manager=f"{prefix}mgr",
        manager_underlay_ip=str(underlay.network_address + 1),
        manager_overlay_ip=segments[0].manager_overlay_ip,
        hosts=tuple(hosts),
        segments=segments,
        monitors=monitors,
    )


def lab_database_url(url: str) -> str:
    """``url`` made reachable from inside the manager's namespace, which has no route to the host's 127.0.0.1.

    SQLite files work as they are; a PostgreSQL on this machine is reached through its Unix socket instead.
    """
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return url
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise LabError(f"the lab's manager can use SQLite or a local PostgreSQL, not {parts.scheme!r}")
    query = dict(parse_qsl(parts.query))
    if query.get("host", "").startswith("/"):
        return url
    if parts.hostname not in {None, "", "127.0.0.1", "localhost", "::1"}:
        raise LabError(
            f"the lab's manager runs in a namespace that cannot reach {parts.hostname}; use a PostgreSQL on this "
            "machine (reached through its Unix socket) or leave out --database-url for the lab's own SQLite"
        )
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + (f":{parts.port}" if parts.port else "")
    query["host"] = PG_SOCKET_DIR
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def monitor_settings(environ: dict[str, str]) -> dict[str, str]:
    """The lab's monitor settings: snappy defaults, each overridable from the environment."""
    values = {key: environ.get(key, "").strip() or default for key, default in MONITOR_DEFAULTS.items()}
    values.update({key: environ[key] for key in PASSED_THROUGH if environ.get(key, "").strip()})
    return values


# ---------------------------------------------------------------------------------------------- state
