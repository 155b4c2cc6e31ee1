"""The VXLAN lab: a manager and N hosts in network namespaces, on a bridged underlay and a real VXLAN overlay.

Topology with the defaults (``manage.py vxlanlab up``, root only)::

    vxlab-lab-sw    br0: the underlay switch, one veth port per namespace below
    vxlab-lab-mgr   eth0 192.168.100.1/24   vxlan100 10.100.0.1/24    manage.py serve --monitor yes, listening
                                                                       on 10.100.0.1:8000 (the hosts) and on
                                                                       var/lab/web.sock (the operator)
    vxlab-lab-h1    eth0 192.168.100.11/24  vxlan100 10.100.0.11/24   docs/register-machine.sh
    ...             (h2 … h5: .12 … .15)
    root namespace  socat 127.0.0.1:8800 -> var/lab/web.sock          the dashboard in the normal browser

The VXLAN links (``type vxlan id VNI group 239.1.1.1 dev eth0``) form one overlay over the bridge. Nothing is
added to the root namespace but the loopback forwarder: no link, no address, no route; the lab namespaces
have connected routes only, never a default route, so nothing is routed out of the lab.

The lab keeps its state (namespaces, the manager's and the forwarder's pid, the tokens, the dashboard URL) in
``VAR_DIR/lab/state.json``; ``down`` removes everything, and cleans up by name prefix when the state is lost.
The manager runs on its own SQLite database under ``VAR_DIR/lab/var`` unless given a database URL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import netns
from .netns import NetNS, NetnsError

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
)
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


@dataclasses.dataclass
class Proc:
    """A process we started, recognised by pid and start time so a recycled pid is never signalled."""

    pid: int
    start: str

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, _start_time(pid) or "")

    def alive(self) -> bool:
        return bool(self.start) and _start_time(self.pid) == self.start

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Send ``sig``; if the process is still there after ``timeout`` seconds, SIGKILL it."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            _reap(self.pid)
            time.sleep(0.05)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                _reap(self.pid)
                time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has stopped running already
        return None
    return fields[19]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclasses.dataclass
class State:
    directory: Path
    config: Config
    secret_key: str
    register_token: str
    api_token: str
    admin_password: str
    database_url: str = ""  # empty: the lab's own SQLite file under directory/var
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    admin_created: bool = False
    manager: Proc | None = None
    forwarder: Proc | None = None
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # host key -> how it was failed

    @property
    def plan(self) -> Plan:
        return make_plan(self.config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}/"

    @property
    def socket_path(self) -> Path:
        return self.directory / "web.sock"

    @property
    def manager_log(self) -> Path:
        return self.directory / "manager.log"

    def save(self) -> None:
        data = dataclasses.asdict(self)
        data["directory"] = str(self.directory)
        path = self.directory / "state.json"
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds tokens
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        temporary.replace(path)


def load_state(directory: Path) -> State | None:
    """The saved state of the lab in ``directory``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((directory / "state.json").read_text())
        data["directory"] = Path(directory)
        data["config"] = Config(**data["config"])
        for key in ("manager", "forwarder"):
            data[key] = Proc(**data[key]) if data.get(key) else None
        return State(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One lab command at a time per lab directory."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- checks


def check_prerequisites(port: int | None = None) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces): run it with sudo")
    missing = [f"{tool} (Debian: {package})" for tool, package in REQUIRED_TOOLS.items() if not shutil.which(tool)]
    if missing:
        raise LabError("the lab needs " + ", ".join(missing))
    if port is not None:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise LabError(f"127.0.0.1:{port} is in use; pick another port with --port") from None


# ---------------------------------------------------------------------------------------------- topology


def build_topology(plan: Plan) -> None:
    """Create the namespaces, the underlay bridge and the VXLAN overlay."""
    switch = NetNS(plan.switch).create()
    _quiet_ipv6(switch)
    # No multicast snooping: with no querier on the segment, the VXLAN group traffic must simply be flooded.
    switch.ip("link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0")
    switch.link_up(BRIDGE)
    members = [(plan.manager, "mgr", plan.manager_underlay_ip, plan.manager_overlay_ip)]
    members += [(host.namespace, host.key, host.underlay_ip, host.overlay_ip) for host in plan.hosts]
    for name, port, underlay_ip, overlay_ip in members:
        ns = NetNS(name).create()
        _quiet_ipv6(ns)
        netns.veth(ns, switch, f"{underlay_ip}/{plan.underlay_prefixlen}", None, name_a=UNDERLAY_DEV, name_b=port)
        switch.ip("link", "set", port, "master", BRIDGE)
        netns.vxlan(
            ns, plan.config.vni, local=underlay_ip, dev=UNDERLAY_DEV, group=MULTICAST_GROUP, learning=True,
            name=plan.vxlan_dev, address=f"{overlay_ip}/{plan.overlay_prefixlen}",
        )


def _quiet_ipv6(ns: NetNS) -> None:
    # The lab is IPv4; without IPv6 the links carry no router solicitations or DAD chatter.
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        with contextlib.suppress(NetnsError):
            ns.sysctl(key, 1)


def remove_namespaces(name: str) -> list[str]:
    """Delete every namespace of the lab ``name`` (killing what runs inside), found by name prefix."""
    return netns.cleanup_stale_namespaces(namespace_prefix(name), include_unowned=True, include_live=True)


# ---------------------------------------------------------------------------------------------- the manager


def manager_env(state: State) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VXLANMGR_") and key not in {"DATABASE_URL", "REDIS_URL"}
    }
    plan = state.plan
    env.update(state.settings)
    env.update(
        VXLANMGR_VAR_DIR=str(state.directory / "var"),
        VXLANMGR_SECRET_KEY=state.secret_key,
        VXLANMGR_ALLOWED_HOSTS=f"127.0.0.1,localhost,[::1],{plan.manager_overlay_ip}",
        VXLANMGR_REGISTER_TOKEN=state.register_token,
        VXLANMGR_API_TOKEN=state.api_token,
        DJANGO_SETTINGS_MODULE="vxlanmgr.settings",
        PYTHONUNBUFFERED="1",
    )
    # Web and monitor share one process, so the in-memory channel layer carries the live updates: the
    # manager's namespace could not reach a Redis on the host's 127.0.0.1 anyway.
    if state.database_url:
        env["DATABASE_URL"] = state.database_url
    return env


def prepare_database(state: State) -> str:
    """Migrate, create the admin user (with the lab's password) and seed the lab's tokens; bootstrap's output."""
    env = {**manager_env(state), "VXLANMGR_ADMIN_PASSWORD": state.admin_password}
    for argv in (["migrate", "--noinput"], ["bootstrap"]):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"manage.py {argv[0]} failed for the lab's database:\n{proc.stderr.strip()[-3000:]}")
    state.admin_created = "Created user 'admin'" in proc.stdout
    return proc.stdout


def start_manager(state: State) -> None:
    """Run ``manage.py serve`` (web and monitor) in the manager namespace, detached from this process."""
    plan = state.plan
    _remove_stale_socket(state.socket_path)
    argv = NetNS(plan.manager).command(
        sys.executable, str(ROOT / "manage.py"), "serve",
        "--host", plan.manager_overlay_ip, "--port", str(plan.config.manager_port),
        "--unix-socket", str(state.socket_path), "--monitor", "yes",
    )
    with open(state.manager_log, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the manager\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=manager_env(state), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    state.manager = Proc.of(process.pid)  # `ip netns exec` execs: this pid is the manager itself


def _remove_stale_socket(path: Path) -> None:
    """Remove the socket and Twisted's lock (a symlink to the owner's pid) a killed manager left behind.

    Twisted only breaks the lock when that pid is gone, and a killed manager stays a zombie until it is
    reaped: without this a restart right after a SIGKILL could fail with "Cannot acquire lock".
    """
    lock = path.with_name(path.name + ".lock")
    with contextlib.suppress(OSError, ValueError):
        owner = int(os.readlink(lock))
        if _start_time(owner) is not None:
            raise LabError(f"process {owner} still serves {path}; stop it first (vxlanlab down)")
        lock.unlink()
    path.unlink(missing_ok=True)


def wait_for_manager(state: State, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (state.manager and state.manager.alive()):
            raise LabError(f"the manager exited during start-up; its log ends:\n{log_tail(state.manager_log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if state.socket_path.exists() and api(state, "GET", "/health", token=None)[0] == 200:
                return
        time.sleep(0.2)
    tail = log_tail(state.manager_log)
    raise LabError(f"the manager did not become healthy in {timeout:.0f} s; its log ends:\n{tail}")


def stop_manager(state: State, sig: int = signal.SIGTERM) -> None:
    if state.manager:
        state.manager.stop(sig)
    state.manager = None


def restart_manager(state: State, sig: int = signal.SIGKILL) -> float:
    """Stop the manager (SIGKILL by default: a crash) and start it again; returns the seconds it was down."""
    stopped = time.monotonic()
    stop_manager(state, sig)
    start_manager(state)
    state.save()
    wait_for_manager(state)
    return time.monotonic() - stopped


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------- the forwarder


def start_forwarder(state: State) -> None:
    """socat in the root namespace: 127.0.0.1:PORT -> the manager's Unix socket (one child per connection)."""
    argv = [
        "socat", f"TCP-LISTEN:{state.config.port},bind=127.0.0.1,reuseaddr,fork",
        f"UNIX-CONNECT:{state.socket_path}",
    ]
    with open(state.directory / "forwarder.log", "ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    state.forwarder = Proc.of(process.pid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"socat exited at once: {log_tail(state.directory / 'forwarder.log', 5)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", state.config.port, timeout=5)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            finally:
                connection.close()
        time.sleep(0.1)
    raise LabError(f"the forwarder on 127.0.0.1:{state.config.port} does not answer")


def forwarder_pids(socket_path: Path) -> list[int]:
    """socat processes forwarding to exactly this lab's socket (for a clean-up after the state was lost)."""
    wanted = f"UNIX-CONNECT:{socket_path}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and Path(argv[0].decode(errors="replace")).name == "socat" and wanted in argv:
                pids.append(int(entry.name))
    return pids


# ---------------------------------------------------------------------------------------------- HTTP


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def api(state: State, method: str, path: str, *, token: str | None = "", timeout: float = 10) -> tuple[int, object]:
    """One request to the manager through its Unix socket (with the lab's API token unless ``token=None``)."""
    headers = {"Accept": "application/json"}
    token = state.api_token if token == "" else token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = _UnixHTTPConnection(state.socket_path, timeout)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, body.decode(errors="replace")


def machines(state: State) -> dict[str, dict]:
    """The manager's machines by IP address (through its API)."""
    status, body = api(state, "GET", "/api/machines?page_size=500")
    if status != 200 or not isinstance(body, dict):
        raise LabError(f"GET /api/machines answered {status}: {body}")
    return {machine["ip_address"]: machine for machine in body["results"]}


# ---------------------------------------------------------------------------------------------- hosts


def register_command(state: State, host: Host, *script_args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment that run docs/register-machine.sh in ``host``'s namespace, as the host would.

    A UTS namespace of its own gives the host its own host name; the script detects the vxlan link, its
    address, MAC and VNI itself and sends the request with curl from the host's overlay address. URL and
    token come through the environment (never the command line).
    """
    config = state.directory / "register.conf"  # empty: /etc/vxlanmgr/register.conf of this machine is not read
    config.touch()
    argv = NetNS(host.namespace).command(
        "unshare", "--uts", "sh", "-c", 'printf %s "$1" >/proc/sys/kernel/hostname && shift && exec sh "$@"',
        "sh", host.hostname, str(SCRIPT), "--config", str(config), *script_args,
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "LANG": "C.UTF-8",
        "VXLANMGR_URL": state.plan.manager_url,
        "VXLANMGR_TOKEN": state.register_token,
        "VXLANMGR_RETRY_BASE": "0.5",
    }
    return argv, env


def register(state: State, host: Host, *script_args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv, env = register_command(state, host, *script_args)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def register_all(state: State, timeout: float = 120) -> None:
    """Every host registers itself at the same time, as after a power cut."""
    running = []
    for host in state.plan.hosts:
        argv, env = register_command(state, host)
        running.append(
            (host, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        )
    failures = []
    for host, process in running:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        if process.returncode != 0:
            failures.append(f"{host.key} ({host.overlay_ip}): exit {process.returncode}: {(err or out).strip()}")
    if failures:
        raise LabError("registration failed:\n  " + "\n  ".join(failures))


def fail(state: State, host: Host, mode: str = "silent") -> None:
    """``silent``: the host stops answering echo requests; ``link-down``: its overlay link goes down."""
    ns = NetNS(host.namespace)
    if mode == "silent":
        ns.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
    elif mode == "link-down":
        ns.ip("link", "set", state.plan.vxlan_dev, "down")
    else:
        raise LabError(f"unknown failure mode {mode!r} (silent or link-down)")
    state.failed[host.key] = mode


def recover(state: State, host: Host) -> subprocess.CompletedProcess:
    """Undo any failure and register again, as the host's boot-time registration would."""
    ns = NetNS(host.namespace)
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
    ns.link_up(state.plan.vxlan_dev)
    state.failed.pop(host.key, None)
    return register(state, host)


def host_condition(state: State, host: Host) -> str:
    """How the host itself is doing, read from its namespace."""
    ns = NetNS(host.namespace)
    if not ns.exists:
        return "namespace missing"
    link = ns.ip("-o", "link", "show", "dev", state.plan.vxlan_dev)
    if "state DOWN" in link or ",UP" not in link:
        return "overlay link down"
    if ns.read_sysctl("net.ipv4.icmp_echo_ignore_all") != "0":
        return "silent (ignores echo requests)"
    return "answering"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def all_active(state: State) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException, LabError):
        known = machines(state)
        return all(known.get(host.overlay_ip, {}).get("status") == "active" for host in state.plan.hosts)
    return False


# ---------------------------------------------------------------------------------------------- up and down


def new_state(directory: Path, config: Config, database_url: str = "", environ: dict | None = None) -> State:
    from machines.models import ApiToken

    environ = os.environ if environ is None else environ
    return State(
        directory=directory,
        config=config,
        secret_key=secrets.token_urlsafe(50),
        register_token=ApiToken.generate_raw(),
        api_token=ApiToken.generate_raw(),
        admin_password=environ.get("VXLANMGR_ADMIN_PASSWORD", "").strip() or secrets.token_urlsafe(12),
        database_url=lab_database_url(database_url),
        settings=monitor_settings(dict(environ)),
    )


def up(directory: Path, config: Config, *, database_url: str = "", say: Callable[[str], None] = print) -> State:
    """Build the lab, start the manager and the forwarder, register every host; torn down again on failure."""
    check_prerequisites()
    plan = make_plan(config)
    existing = load_state(directory)
    if existing and existing.manager and existing.manager.alive():
        raise LabError(f"a lab is already up ({existing.url}); see `vxlanlab status`, or `vxlanlab down` first")
    if existing or (directory / "state.json").exists():
        say("Cleaning up what a previous lab left behind …")
        down(directory, existing.config.name if existing else config.name, say=lambda _line: None)
    leftovers = netns.list_namespaces(plan.prefix)
    if leftovers:  # another lab of that name (from another VXLANMGR_VAR_DIR), or one whose state was lost
        raise LabError(
            f"namespaces of a lab named {config.name!r} exist already ({', '.join(leftovers)}): choose another "
            f"--name, or remove them with `vxlanlab down --name {config.name}`"
        )
    check_prerequisites(config.port)
    if len(str(directory / "web.sock")) > 100:
        raise LabError(f"{directory} is too long a path for a Unix socket; set VXLANMGR_VAR_DIR shorter")
    state = new_state(directory, config, database_url)
    state.save()
    try:
        say(f"Creating {len(plan.namespaces)} namespaces: underlay {config.underlay}, "
            f"VXLAN {config.vni} overlay {config.overlay} …")
        build_topology(plan)
        say("Preparing the manager's database …")
        prepare_database(state)
        state.save()
        say(f"Starting the manager in {plan.manager} ({plan.manager_url} and {state.socket_path}) …")
        start_manager(state)
        state.save()
        wait_for_manager(state)
        start_forwarder(state)
        state.save()
        say(f"Registering {len(plan.hosts)} hosts with docs/register-machine.sh …")
        register_all(state)
        if not wait_until(lambda: all_active(state), 60):
            raise LabError(f"not every host turned active within 60 s; manager log:\n{log_tail(state.manager_log)}")
    except BaseException:
        with contextlib.suppress(Exception):
            say(f"Start-up failed; the manager's log ends:\n{log_tail(state.manager_log, 15)}")
        down(directory, config.name, say=lambda _line: None)
        raise
    return state


def down(directory: Path, name: str = "lab", *, say: Callable[[str], None] = print) -> list[str]:
    """Stop the forwarder and the manager, delete the namespaces and the lab's files; returns what was removed.

    Works from the saved state, and by name prefix (namespaces) and socket path (forwarder) without it.
    """
    state = load_state(directory)
    if state:
        name = state.config.name
    removed = []
    socket_path = directory / "web.sock"
    forwarders = [state.forwarder] if state and state.forwarder else []
    forwarders += [Proc.of(pid) for pid in forwarder_pids(socket_path)]
    for proc in forwarders:
        if proc.alive():
            proc.stop()
            removed.append(f"forwarder (pid {proc.pid})")
    if state and state.manager and state.manager.alive():
        state.manager.stop(signal.SIGTERM, timeout=8)  # let it finish its writes; the namespace goes next anyway
        removed.append(f"manager (pid {state.manager.pid})")
    for namespace in remove_namespaces(name):
        removed.append(f"namespace {namespace}")
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name == "lock":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    for line in removed:
        say(f"removed {line}")
    return removed
