"""The VXLAN lab: a manager and N hosts in network namespaces, on a bridged underlay and a real VXLAN overlay.

Topology with the defaults (``manage.py vxlanlab up``, root only)::

    vxlab-lab-sw    br0: the underlay switch, one veth port per namespace below
    vxlab-lab-mgr   eth0 192.168.100.1/24   vxlan100 10.100.0.1/24    manage.py serve --monitor yes, listening
                                                                       on 10.100.0.1:8000 (the hosts) and on
                                                                       var/lab/web.sock (the operator);
                                                                       lab/receiver.py on 127.0.0.1:8025 takes
                                                                       its alerts (json://)
    vxlab-lab-h1    eth0 192.168.100.11/24  vxlan100 10.100.0.11/24   docs/register-machine.sh
    ...             (h2 … h5: .12 … .15)
    root namespace  socat 127.0.0.1:8800 -> var/lab/web.sock          the dashboard in the normal browser

With ``--vnis 100,200`` each VNI is an overlay of its own (``vxlan200``, ``10.200.0.0/24``): the hosts are split
between them, the manager has a link and its .1 on each. With ``--monitors 2`` as well, the manager runs
``serve --monitor no`` and each VNI gets a monitor namespace (``vxlab-lab-mon100``: underlay .2, ``vxlan100``
10.100.0.2, host name ``lab-mon100``) running ``manage.py monitor --scope vni=100 --name lab-monitor-100``; all of
them use the PostgreSQL of ``--database-url`` through its Unix socket and a ``redis-server`` the lab starts on
``VAR_DIR/lab/redis.sock`` (root namespace, no TCP port). ``isolate``/``rejoin`` take the checking side's vxlan
links down and up: each monitor's with ``--monitors``, else the manager's.

The VXLAN links (``type vxlan id VNI group 239.1.1.1 dev eth0``) form the overlays over the bridge. Nothing is
added to the root namespace but the loopback forwarder: no link, no address, no route; the lab namespaces
have connected routes only, never a default route, so nothing is routed out of the lab.

The manager sends its alerts (VXLANMGR_NOTIFY_URLS) to the lab's webhook receiver on its namespace's loopback,
which appends them to ``VAR_DIR/lab/alerts.jsonl`` for ``vxlanlab alerts``; each monitor namespace has a receiver
too (monitors deliver alerts as well), writing to the same file.

The lab keeps its state (namespaces, the manager's, the receiver's and the forwarder's pid, the tokens, the
dashboard URL) in ``VAR_DIR/lab/state.json``; ``down`` removes everything, and cleans up by name prefix when the
state is lost.
The manager runs on its own SQLite database under ``VAR_DIR/lab/var`` unless given a database URL.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import netns
from .manager import (
    forwarder_pids,
    log_tail,
    machines,
    prepare_database,
    start_forwarder,
    start_manager,
    start_monitor,
    start_receiver,
    start_redis,
    stop_monitors,
    stop_redis,
    wait_for_manager,
)
from .netns import NetNS, NetnsError
from .plan import (
    BRIDGE,
    MONITOR_TOOLS,
    MULTICAST_GROUP,
    RECEIVER_URL,
    REQUIRED_TOOLS,
    SCRIPT,
    UNDERLAY_DEV,
    Config,
    Host,
    LabError,
    Plan,
    lab_database_url,
    make_plan,
    monitor_settings,
    namespace_prefix,
)
from .state import Proc, State, load_state


def check_prerequisites(port: int | None = None, *, monitors: bool = False) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces): run it with sudo")
    tools = {**REQUIRED_TOOLS, **(MONITOR_TOOLS if monitors else {})}
    missing = [f"{tool} (Debian: {package})" for tool, package in tools.items() if not shutil.which(tool)]
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
    """Create the namespaces, the underlay bridge and the VXLAN overlays."""
    switch = NetNS(plan.switch).create()
    _quiet_ipv6(switch)
    # No multicast snooping: with no querier on the segment, the VXLAN group traffic must simply be flooded.
    switch.ip("link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0")
    switch.link_up(BRIDGE)
    # (namespace, switch port, underlay address, [(segment, overlay address)]): the manager is on every overlay,
    # a monitor and a host on their VNI's only.
    members = [
        (plan.manager, "mgr", plan.manager_underlay_ip, [(seg, seg.manager_overlay_ip) for seg in plan.segments])
    ]
    members += [
        (node.namespace, f"m{node.vni}", node.underlay_ip, [(plan.segment(node.vni), node.overlay_ip)])
        for node in plan.monitors
    ]
    members += [
        (host.namespace, host.key, host.underlay_ip, [(plan.segment(host.vni), host.overlay_ip)])
        for host in plan.hosts
    ]
    for name, port, underlay_ip, overlays in members:
        ns = NetNS(name).create()
        _quiet_ipv6(ns)
        netns.veth(ns, switch, f"{underlay_ip}/{plan.underlay_prefixlen}", None, name_a=UNDERLAY_DEV, name_b=port)
        switch.ip("link", "set", port, "master", BRIDGE)
        for segment, overlay_ip in overlays:
            netns.vxlan(
                ns, segment.vni, local=underlay_ip, dev=UNDERLAY_DEV, group=MULTICAST_GROUP, learning=True,
                name=segment.vxlan_dev, address=f"{overlay_ip}/{segment.prefixlen}",
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
        "VXLANMGR_URL": state.plan.manager_url_for(host.vni),
        "VXLANMGR_TOKEN": state.register_token,
        "VXLANMGR_RETRY_BASE": "0.5",
    }
    return argv, env


def register(state: State, host: Host, *script_args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    argv, env = register_command(state, host, *script_args)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def register_many(state: State, hosts: list[Host], timeout: float = 120) -> dict[str, tuple[int, str]]:
    """These hosts register themselves at the same time; host key -> (exit code, output)."""
    running = []
    for host in hosts:
        argv, env = register_command(state, host)
        running.append(
            (host, subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        )
    results = {}
    for host, process in running:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results[host.key] = (process.returncode, (out + err).strip())
    return results


def register_all(state: State, timeout: float = 120) -> None:
    """Every host registers itself at the same time, as after a power cut."""
    hosts = {host.key: host for host in state.plan.hosts}
    failures = [
        f"{key} ({hosts[key].overlay_ip}): exit {code}: {output}"
        for key, (code, output) in register_many(state, list(hosts.values()), timeout).items() if code != 0
    ]
    if failures:
        raise LabError("registration failed:\n  " + "\n  ".join(failures))


def fail(state: State, host: Host, mode: str = "silent") -> None:
    """``silent``: the host stops answering echo requests; ``link-down``: its overlay link goes down."""
    ns = NetNS(host.namespace)
    if mode == "silent":
        ns.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
    elif mode == "link-down":
        ns.ip("link", "set", host.vxlan_dev, "down")
    else:
        raise LabError(f"unknown failure mode {mode!r} (silent or link-down)")
    state.failed[host.key] = mode


def recover(state: State, host: Host) -> subprocess.CompletedProcess:
    """Undo any failure and register again, as the host's boot-time registration would."""
    heal(state, host)
    return register(state, host)


def heal(state: State, host: Host) -> None:
    """Undo any failure (the host answers again) without registering."""
    ns = NetNS(host.namespace)
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
    ns.link_up(host.vxlan_dev)
    state.failed.pop(host.key, None)


def recover_many(state: State, hosts: list[Host]) -> dict[str, tuple[int, str]]:
    """Bring these hosts back together and have them register at the same time, as after a rack's reboot."""
    for host in hosts:
        heal(state, host)
    return register_many(state, hosts)


def host_condition(state: State, host: Host) -> str:
    """How the host itself is doing, read from its namespace."""
    ns = NetNS(host.namespace)
    if not ns.exists:
        return "namespace missing"
    if not link_is_up(ns, host.vxlan_dev):
        return "overlay link down"
    if ns.read_sysctl("net.ipv4.icmp_echo_ignore_all") != "0":
        return "silent (ignores echo requests)"
    return "answering"


def link_is_up(ns: NetNS, dev: str) -> bool:
    link = ns.ip("-o", "link", "show", "dev", dev)
    return "state DOWN" not in link and ",UP" in link


# ---------------------------------------------------------------------------------------------- the monitors' side


def checking_links(state: State, vni: int | None = None) -> list[tuple[str, NetNS, str]]:
    """The overlay links the monitoring depends on: (whose, namespace, link). With --monitors, each
    monitor's link of its VNI; without, the manager's link on each overlay. ``vni`` picks one overlay."""
    plan = state.plan
    if vni is not None:
        plan.segment(vni)
    if plan.monitors:
        return [
            (f"monitor {node.name} on VNI {node.vni}", NetNS(node.namespace), node.vxlan_dev)
            for node in plan.monitors if vni in (None, node.vni)
        ]
    return [
        (f"manager on VNI {segment.vni}", NetNS(plan.manager), segment.vxlan_dev)
        for segment in plan.segments if vni in (None, segment.vni)
    ]


def isolate(state: State, vni: int | None = None) -> list[str]:
    """Cut the monitoring side off its overlay (its vxlan link down: the connected route goes with it), as a
    failed NIC, cable or switch port on the monitor's machine would; the hosts stay as they are."""
    done = []
    for label, ns, dev in checking_links(state, vni):
        ns.ip("link", "set", dev, "down")
        done.append(f"{label}: {dev} in {ns.name} is down")
    return done


def rejoin(state: State, vni: int | None = None) -> list[str]:
    done = []
    for label, ns, dev in checking_links(state, vni):
        ns.link_up(dev)
        done.append(f"{label}: {dev} in {ns.name} is up")
    return done


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
    """Build the lab, start the manager (and the monitors) and the forwarder, register every host; torn down
    again on failure."""
    check_prerequisites(monitors=bool(config.monitors))
    plan = make_plan(config)
    if plan.monitors and not lab_database_url(database_url).startswith(("postgres:", "postgresql:", "pgsql:")):
        raise LabError(
            "--monitors needs --database-url with a PostgreSQL on this machine (postgres://user@127.0.0.1/NAME): "
            "the web process and the monitors, each in a namespace of its own, share it through its Unix socket"
        )
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
    check_prerequisites(config.port, monitors=bool(config.monitors))
    if len(str(directory / "redis.sock")) > 100:
        raise LabError(f"{directory} is too long a path for a Unix socket; set VXLANMGR_VAR_DIR shorter")
    state = new_state(directory, config, database_url)
    state.save()
    try:
        overlays = ", ".join(f"VXLAN {segment.vni} overlay {segment.overlay}" for segment in plan.segments)
        say(f"Creating {len(plan.namespaces)} namespaces: underlay {config.underlay}, {overlays} …")
        build_topology(plan)
        if plan.monitors:
            say(f"Starting the lab's Redis on {state.redis_socket} …")
            start_redis(state)
            state.save()
        say(f"Starting the alert receiver in {plan.manager} ({RECEIVER_URL}) …")
        start_receiver(state)
        state.save()
        say("Preparing the manager's database …")
        prepare_database(state)
        state.save()
        urls = " and ".join(plan.manager_url_for(segment.vni) for segment in plan.segments)
        what = "the web process" if plan.monitors else "the manager"
        say(f"Starting {what} in {plan.manager} ({urls} and {state.socket_path}) …")
        start_manager(state)
        state.save()
        wait_for_manager(state)
        start_forwarder(state)
        state.save()
        for node in plan.monitors:
            say(f"Starting monitor {node.name} in {node.namespace} (--scope {node.scope}) …")
            start_monitor(state, node.vni)
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
    """Stop the forwarder, the manager, the monitors and Redis, delete the namespaces and the lab's files; returns
    what was removed.

    Works from the saved state, and by name prefix (namespaces) and socket path (forwarder, Redis) without it.
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
    if state:  # without the state, removing the namespaces ends them
        removed += stop_monitors(state)
    if state and state.receiver and state.receiver.alive():
        state.receiver.stop()
        removed.append(f"alert receiver (pid {state.receiver.pid})")
    # The lab's Redis runs in this namespace, not in the lab's: removing those would not end it.
    removed += stop_redis(state, directory / "redis.sock")
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
