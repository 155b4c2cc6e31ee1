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
FIRST_HOST = 11  # host N gets .(10 + N) on both networks; the manager gets .1

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
    "VXLANMGR_MONITOR_STALE", "VXLANMGR_NOTIFY_MAX_AGE",
)
# The lab's webhook receiver (lab/receiver.py) listens on the manager namespace's loopback: web and monitor run
# in that namespace and reach it, nothing else can. Its Apprise URL is the lab manager's VXLANMGR_NOTIFY_URLS.
RECEIVER_PORT = 8025
RECEIVER_URL = f"json://127.0.0.1:{RECEIVER_PORT}/alerts"
REQUIRED_TOOLS = {
    "ip": "iproute2", "sysctl": "procps", "socat": "socat", "curl": "curl", "sh": "dash", "unshare": "util-linux",
}


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

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,12}", self.name):
            raise LabError(f"the lab name must be 1-12 lowercase letters or digits, got {self.name!r}")
        if not 1 <= self.hosts <= 50:
            raise LabError(f"--hosts must be from 1 to 50, got {self.hosts}")
        if not 1 <= self.vni <= 0xFFFFFF:
            raise LabError(f"--vni must be from 1 to 16777215, got {self.vni}")
        for port, flag in ((self.port, "--port"), (self.manager_port, "--manager-port")):
            if not 1 <= port <= 65535:
                raise LabError(f"{flag} must be from 1 to 65535, got {port}")
        networks = []
        for text, flag in ((self.overlay, "--overlay"), (self.underlay, "--underlay")):
            try:
                network = ipaddress.IPv4Network(text)
            except ValueError as exc:
                raise LabError(f"{flag} must be an IPv4 network such as 10.100.0.0/24: {exc}") from None
            if not network.is_private or network.is_loopback or network.is_link_local or network.is_multicast:
                raise LabError(f"{flag} must be a private range (10/8, 172.16/12, 192.168/16), got {network}")
            if network.num_addresses - 2 < FIRST_HOST - 1 + self.hosts:
                raise LabError(f"{flag} {network} is too small for {self.hosts} hosts")
            networks.append(network)
        if networks[0].overlaps(networks[1]):
            raise LabError(f"the overlay {networks[0]} and the underlay {networks[1]} overlap")


@dataclasses.dataclass(frozen=True)
class Host:
    key: str  # h1, h2, …
    namespace: str
    hostname: str
    underlay_ip: str
    overlay_ip: str


@dataclasses.dataclass(frozen=True)
class Plan:
    config: Config
    switch: str
    manager: str
    manager_underlay_ip: str
    manager_overlay_ip: str
    hosts: tuple[Host, ...]

    @property
    def prefix(self) -> str:
        return namespace_prefix(self.config.name)

    @property
    def vxlan_dev(self) -> str:
        return f"{VXLAN_DEV_PREFIX}{self.config.vni}"[:15]

    @property
    def overlay_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.config.overlay).prefixlen

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.config.underlay).prefixlen

    @property
    def manager_url(self) -> str:
        """Where hosts send their registrations: the manager's overlay address."""
        return f"http://{self.manager_overlay_ip}:{self.config.manager_port}"

    @property
    def namespaces(self) -> list[str]:
        return [self.switch, self.manager, *(host.namespace for host in self.hosts)]

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
    overlay, underlay = ipaddress.IPv4Network(config.overlay), ipaddress.IPv4Network(config.underlay)
    prefix = namespace_prefix(config.name)
    hosts = tuple(
        Host(
            key=f"h{n}",
            namespace=f"{prefix}h{n}",
            hostname=f"{config.name}-h{n}",
            underlay_ip=str(underlay.network_address + FIRST_HOST - 1 + n),
            overlay_ip=str(overlay.network_address + FIRST_HOST - 1 + n),
        )
        for n in range(1, config.hosts + 1)
    )
    return Plan(
        config=config,
        switch=f"{prefix}sw",
        manager=f"{prefix}mgr",
        manager_underlay_ip=str(underlay.network_address + 1),
        manager_overlay_ip=str(overlay.network_address + 1),
        hosts=hosts,
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
