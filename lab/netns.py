"""Throw-away Linux network namespaces for tests and labs (root only).

Everything here drives the real ``ip`` (iproute2), ``sysctl`` and ``nft`` (nftables) tools. Nothing is
ever created in, or routed out of, the host namespace: veth pairs are created with both ends directly
inside test namespaces, and :meth:`NetNS.add_route` refuses default routes.

Typical use::

    with Lab() as lab:
        a, b = lab.namespace(), lab.namespace()
        veth(a, b, "10.77.0.1/24", "10.77.0.2/24")
        b.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        a.run(sys.executable, "-m", "monitoring.icmp", "10.77.0.2")

Every namespace is named ``vxm-`` + 8 random hex digits. Before it is created, its owner (pid + process
start time) is written to ``/run/vxm-netns/<name>``; :func:`cleanup_stale_namespaces` removes ``vxm-*``
namespaces whose owner is gone (a crashed earlier run) and leaves those of live concurrent runs alone
(from a shell: ``python -m monitoring.netns cleanup``; ``list`` shows them).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PREFIX = "vxm-"
OWNER_DIR = Path("/run/vxm-netns")
NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """A namespace command failed; the message carries the command and its stderr."""


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 60):
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv[:8])}{' …' if len(argv) > 8 else ''} failed ({proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


# ---------------------------------------------------------------------------------------------- probing


@functools.cache
def netns_available() -> bool:
    """True when we are root, iproute2 is installed and a namespace can really be created and removed."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    try:
        with NetNS():
            pass
    except (NetnsError, OSError, subprocess.SubprocessError):
        return False
    return True


@functools.cache
def nft_available() -> bool:
    """True when nftables works inside a namespace (needs :func:`netns_available`)."""
    if not netns_available() or not shutil.which("nft"):
        return False
    try:
        with NetNS() as ns:
            ns.nft("add table inet vxmprobe")
    except (NetnsError, OSError, subprocess.SubprocessError):
        return False
    return True


# ---------------------------------------------------------------------------------------------- owners


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after "comm)"


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the existing namespaces that start with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def _kill_namespace_processes(name: str) -> None:
    """SIGKILL whatever still runs inside the (test-owned) namespace ``name``."""
    proc = _run(["ip", "netns", "pids", name], check=False, timeout=10)
    for token in proc.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(token), signal.SIGKILL)


def _delete_namespace(name: str) -> None:
    if (NETNS_DIR / name).exists():
        _kill_namespace_processes(name)
        # Deleting the namespace destroys the veth/vxlan links inside it (and their peers elsewhere).
        for attempt in range(5):
            proc = _run(["ip", "netns", "del", name], check=False, timeout=10)
            if proc.returncode == 0 or not (NETNS_DIR / name).exists():
                break
            time.sleep(0.05 * (attempt + 1))
        else:
            raise NetnsError(f"ip netns del {name} failed: {proc.stderr.strip()}")
    with contextlib.suppress(FileNotFoundError):
        (OWNER_DIR / name).unlink()


def namespace_owner(name: str) -> tuple[int, str] | None:
    """(pid, process start time) recorded for a namespace created by :class:`NetNS`, else None."""
    try:
        pid_text, start = (OWNER_DIR / name).read_text().split()
        return int(pid_text), start
    except (OSError, ValueError):
        return None


def cleanup_stale_namespaces(
    prefix: str = PREFIX, *, include_unowned: bool = False, include_live: bool = False
) -> list[str]:
    """Remove ``vxm-*`` namespaces left behind by crashed runs; return their names.

    A namespace made by :class:`NetNS` records its owner before it exists; it is stale once that process
    is gone (a crash, a SIGKILLed test run). Namespaces of live owners belong to concurrent runs and are
    kept unless ``include_live``; ``vxm-*`` namespaces without an owner record were made by something
    else and are kept unless ``include_unowned``.
    """
    removed = []
    for name in list_namespaces(prefix):
        owner = namespace_owner(name)
        if owner is None:
            stale = include_unowned
        else:
            stale = include_live or _start_time(owner[0]) != owner[1]
        if stale:
            _delete_namespace(name)
            removed.append(name)
    if OWNER_DIR.is_dir():  # owner records whose namespace is gone
        for record in OWNER_DIR.iterdir():
            if record.name.startswith(prefix) and not (NETNS_DIR / record.name).exists():
                owner = namespace_owner(record.name)
                if owner is None or _start_time(owner[0]) != owner[1]:  # not one being created right now
                    with contextlib.suppress(FileNotFoundError):
                        record.unlink()
    return removed


# ---------------------------------------------------------------------------------------------- namespaces


def _is_default(destination: str) -> bool:
    if destination in {"default", "all", "any"}:
        return True
    try:
        return ipaddress.ip_network(destination, strict=False).prefixlen == 0
    except ValueError:
        return False


class NetNS:
    """One uniquely named network namespace with ``lo`` up; destroyed on ``__exit__`` / :meth:`destroy`.

    Processes started with :meth:`popen` are tracked and killed on teardown, and so is anything else
    still running inside the namespace.
    """

    def __init__(self, name: str | None = None, *, prefix: str = PREFIX):
        self.prefix = prefix
        self.name = name or ""
        self._created = False
        self._procs: list[subprocess.Popen] = []

    # -- lifecycle
    def create(self) -> NetNS:
        if self._created:
            return self
        OWNER_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(20):
            name = self.name or f"{self.prefix}{secrets.token_hex(4)}"
            owner = OWNER_DIR / name
            if (NETNS_DIR / name).exists() or owner.exists():  # taken (or being created): never touch it
                if self.name:
                    raise NetnsError(f"namespace {name} already exists")
                continue
            owner.write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")  # before the namespace exists
            proc = _run(["ip", "netns", "add", name], check=False, timeout=30)
            if proc.returncode == 0:
                self.name, self._created = name, True
                break
            with contextlib.suppress(FileNotFoundError):
                owner.unlink()
            if self.name or "exists" not in proc.stderr:
                raise NetnsError(f"ip netns add {name} failed: {proc.stderr.strip()}")
        else:
            raise NetnsError("could not find a free namespace name")
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Kill our processes in the namespace and delete it. Safe to call twice."""
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._created:
            self._created = False
            _delete_namespace(self.name)

    def __enter__(self) -> NetNS:
        return self.create()

    def __exit__(self, *exc_info) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<NetNS {self.name or '(not created)'}>"

    @property
    def exists(self) -> bool:
        return bool(self.name) and (NETNS_DIR / self.name).exists()

    # -- commands
    def command(self, *argv: str, user: str | int | None = None) -> list[str]:
        """The argv that runs ``argv`` inside the namespace (optionally as another user, groups cleared)."""
        prefix = ["ip", "netns", "exec", self.name]
        if user is not None:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
            prefix += ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
        return prefix + [str(a) for a in argv]

    def run(
        self,
        *argv: str,
        user: str | int | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace, capture text output; raise :class:`NetnsError` on failure."""
        argv_full = self.command(*argv, user=user)
        proc = subprocess.run(
            argv_full, input=input, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
        )
        if check and proc.returncode != 0:
            raise NetnsError(
                f"in {self.name}: {' '.join(map(str, argv))[:200]} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}"
            )
        return proc

    def popen(self, *argv: str, user: str | int | None = None, **kwargs) -> subprocess.Popen:
        """Start a background command inside the namespace; it is killed on teardown at the latest."""
        proc = subprocess.Popen(self.command(*argv, user=user), **kwargs)
        self._procs.append(proc)
        return proc

    def ip(self, *args: str) -> str:
        """``ip -n NAME args…``; returns stdout."""
        return _run(["ip", "-n", self.name, *map(str, args)]).stdout

    def pids(self) -> list[int]:
        return [int(t) for t in _run(["ip", "netns", "pids", self.name], check=False).stdout.split()]

    # -- configuration
    def sysctl(self, key: str, value: object) -> None:
        """Set a per-namespace ``net.*`` sysctl inside the namespace (never on the host)."""
        if not key.startswith("net.") or key.startswith(("net.core.", "net.netfilter.nf_conntrack_max")):
            raise ValueError(f"refusing {key}: only per-namespace net.* sysctls may be set from a test namespace")
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def read_sysctl(self, key: str) -> str:
        return self.run("sysctl", "-n", key).stdout.strip()

    def nft(self, ruleset: str) -> None:
        """Load nftables rules (``nft -f -`` syntax) inside the namespace."""
        self.run("nft", "-f", "-", input=ruleset)

    def drop_echo_requests(self, addresses: list[str], table: str = "vxmdrop") -> None:
        """Make these IPv4 addresses silent, like powered-off hosts: echo requests to them are dropped on
        input, so the send itself succeeds and no error comes back."""
        elements = ",\n".join(addresses)
        self.nft(f"""
table ip {table} {{
  set dead {{ type ipv4_addr; elements = {{ {elements} }} }}
  chain input {{
    type filter hook input priority 0;
    ip daddr @dead icmp type echo-request drop
  }}
}}
""")

    def link_up(self, dev: str) -> None:
        self.ip("link", "set", dev, "up")

    def add_address(self, dev: str, cidr: str) -> None:
        args = ["addr", "add", cidr, "dev", dev]
        if ":" in cidr:
            args.append("nodad")  # usable at once, no duplicate address detection delay
        self.ip(*args)

    def add_route(
        self,
        destination: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        type: str | None = None,
        table: str | None = None,
    ) -> None:
        """Add a route; ``type`` is e.g. ``blackhole``/``unreachable``/``prohibit``. Default routes are refused."""
        if _is_default(destination):
            raise ValueError("test namespaces never get a default route")
        args = ["route", "add", *([type] if type else []), destination]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        if table:
            args += ["table", table]
        self.ip(*args)

    def blackhole(self, destination: str, *, table: str | None = None) -> None:
        """Make sends to ``destination`` fail at once (EINVAL); ``table="local"`` also covers 127/8."""
        self.add_route(destination, type="blackhole", table=table)


def _ifname(tag: str) -> str:
    return f"vx{secrets.token_hex(4)}{tag}"[:15]


def veth(
    a: NetNS,
    b: NetNS,
    addr_a: str | Iterable[str] | None = None,
    addr_b: str | Iterable[str] | None = None,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    mtu: int | None = None,
) -> tuple[str, str]:
    """Create a veth pair with one end in ``a`` and the other in ``b``, address and bring up both ends.

    The pair is created directly inside the namespaces (it never appears in the host namespace).
    Returns the interface names ``(in_a, in_b)``.
    """
    name_a, name_b = name_a or _ifname("a"), name_b or _ifname("b")
    args = ["link", "add", name_a]
    if mtu:
        args += ["mtu", str(mtu)]
    args += ["type", "veth", "peer", "name", name_b, "netns", b.name]
    if mtu:
        args += ["mtu", str(mtu)]
    a.ip(*args)
    for ns, dev, addrs in ((a, name_a, addr_a), (b, name_b, addr_b)):
        for cidr in [addrs] if isinstance(addrs, str) else (addrs or []):
            ns.add_address(dev, cidr)
        ns.link_up(dev)
    return name_a, name_b


def vxlan(
    ns: NetNS,
    vni: int,
    *,
    local: str,
    dev: str,
    remote: str | None = None,
    group: str | None = None,
    address: str | Iterable[str] | None = None,
    name: str | None = None,
    dstport: int = 4789,
    learning: bool = False,
) -> str:
    """Create a VXLAN link in ``ns`` over ``dev`` (unicast ``remote`` or multicast ``group``); returns its name."""
    if (remote is None) == (group is None):
        raise ValueError("give exactly one of remote= or group=")
    name = name or _ifname("x")
    args = ["link", "add", name, "type", "vxlan", "id", str(vni), "local", local, "dev", dev, "dstport", str(dstport)]
    args += ["remote", remote] if remote else ["group", group]
    if not learning:
        args.append("nolearning")
    ns.ip(*args)
    for cidr in [address] if isinstance(address, str) else (address or []):
        ns.add_address(name, cidr)
    ns.link_up(name)
    return name


class Lab:
    """Several namespaces torn down together, even when the body raised."""

    def __init__(self, prefix: str = PREFIX):
        self.prefix = prefix
        self.namespaces: list[NetNS] = []

    def namespace(self) -> NetNS:
        ns = NetNS(prefix=self.prefix)
        self.namespaces.append(ns)  # registered first: destroyed even if create() fails half-way
        return ns.create()

    def destroy(self) -> None:
        errors = []
        for ns in reversed(self.namespaces):
            try:
                ns.destroy()
            except Exception as exc:  # keep tearing down the others
                errors.append(exc)
        self.namespaces.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m monitoring.netns", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list vxm-* namespaces and their owners")
    cleanup = sub.add_parser("cleanup", help="remove vxm-* namespaces whose owner process is gone")
    cleanup.add_argument("--unowned", action="store_true", help="also those without an owner record")
    cleanup.add_argument("--all", action="store_true", help="every vxm-* namespace, even of live runs")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in list_namespaces():
            print(name, namespace_owner(name) or "(no owner record)")
        return 0
    for name in cleanup_stale_namespaces(include_unowned=args.unowned or args.all, include_live=args.all):
        print("removed", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
