"""The lab's manager (`manage.py serve` in its namespace), its monitors in namespaces of their own (with
--monitors), the lab's Redis they share, the loopback forwarder to the manager, and its API as the lab uses it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import receiver
from .netns import NetNS
from .plan import RECEIVER_PORT, RECEIVER_URL, ROOT, LabError
from .state import Proc, State, process_start_time


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
        VXLANMGR_ALLOWED_HOSTS=",".join(["127.0.0.1", "localhost", "[::1]", *plan.manager_overlay_ips]),
        VXLANMGR_REGISTER_TOKEN=state.register_token,
        VXLANMGR_API_TOKEN=state.api_token,
        # Alerts go to the lab's own receiver (the namespace has no route out); their links to the dashboard
        # work in the operator's browser, through the forwarder.
        VXLANMGR_NOTIFY_URLS=RECEIVER_URL,
        VXLANMGR_BASE_URL=state.url.rstrip("/"),
        DJANGO_SETTINGS_MODULE="vxlanmgr.settings",
        PYTHONUNBUFFERED="1",
    )
    # Apprise posts through `requests`, which would send even 127.0.0.1 to a proxy named in the environment.
    for key in ("no_proxy", "NO_PROXY"):
        env[key] = ",".join(filter(None, [env.get(key, ""), "127.0.0.1", "localhost"]))
    # Without --monitors web and monitor share one process, so the in-memory channel layer carries the live
    # updates: the manager's namespace could not reach a Redis on the host's 127.0.0.1 anyway. With them, the
    # lab's own Redis on a Unix socket carries them from every namespace.
    if state.redis_url:
        env["REDIS_URL"] = state.redis_url
    if state.database_url:
        env["DATABASE_URL"] = state.database_url
    return env


def prepare_database(state: State) -> str:
    """Create the schema, the admin user (with the lab's password) and seed the lab's tokens; bootstrap's output."""
    env = {**manager_env(state), "VXLANMGR_ADMIN_PASSWORD": state.admin_password}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "bootstrap"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"manage.py bootstrap failed for the lab's database:\n{proc.stderr.strip()[-3000:]}")
    state.admin_created = "Created user 'admin'" in proc.stdout
    return proc.stdout


def start_manager(state: State) -> None:
    """Run ``manage.py serve`` in the manager namespace, detached from this process: web and monitor, or with
    --monitors the web process alone."""
    plan = state.plan
    _remove_stale_socket(state.socket_path)
    # One overlay: its address only. Several: every address of the namespace (one per overlay, and the
    # underlay's, which only the lab's own namespaces reach).
    host = plan.manager_overlay_ip if len(plan.segments) == 1 else "0.0.0.0"  # noqa: S104
    argv = NetNS(plan.manager).command(
        sys.executable, str(ROOT / "manage.py"), "serve",
        "--host", host, "--port", str(plan.config.manager_port),
        "--unix-socket", str(state.socket_path), "--monitor", "no" if plan.monitors else "yes",
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
        if process_start_time(owner) is not None:
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


def start_monitor(state: State, vni: int) -> None:
    """``manage.py monitor --scope vni=N`` in VNI N's monitor namespace, under a host name of its own (a UTS
    namespace: the heartbeat records it), detached from this process."""
    node = state.plan.monitor(vni)
    running = state.monitor(vni)
    if running and running.alive():
        raise LabError(f"the monitor of VNI {vni} is running already (pid {running.pid}); kill-monitor {vni} first")
    if not (state.monitor_receivers.get(str(vni)) and state.monitor_receivers[str(vni)].alive()):
        state.monitor_receivers[str(vni)] = _start_receiver_in(state, node.namespace, f"receiver-{vni}.log")
    argv = NetNS(node.namespace).command(
        "unshare", "--uts", "sh", "-c", 'printf %s "$1" >/proc/sys/kernel/hostname && shift && exec "$@"',
        "sh", node.hostname,
        sys.executable, str(ROOT / "manage.py"), "monitor", "--scope", node.scope, "--name", node.name,
    )
    log_path = state.monitor_log(vni)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {node.name} in {node.namespace}\n".encode())
        log.flush()
        start = log.tell()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=manager_env(state), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    # `ip netns exec`, `unshare` and `sh -c 'exec …'` all exec: this pid is the monitor itself.
    state.monitors[str(vni)] = Proc.of(process.pid)
    state.save()
    _wait_for_monitor(state, vni, log_path, start)


def _wait_for_monitor(state: State, vni: int, log_path: Path, start: int, timeout: float = 60) -> None:
    """Until the monitor logs that it started (its pinger is open and it is about to claim machines)."""
    proc = state.monitor(vni)
    started = f"monitor {state.plan.monitor(vni).name} started".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with open(log_path, "rb") as log:
                log.seek(start)
                if started in log.read():
                    return
        if not (proc and proc.alive()):
            raise LabError(f"the monitor of VNI {vni} exited during start-up; its log ends:\n{log_tail(log_path)}")
        time.sleep(0.2)
    raise LabError(f"the monitor of VNI {vni} did not start in {timeout:.0f} s; its log ends:\n{log_tail(log_path)}")


def stop_monitor(state: State, vni: int, sig: int = signal.SIGTERM) -> bool:
    """Stop VNI ``vni``'s monitor (SIGKILL: as if its machine died); False when it was not running."""
    state.plan.monitor(vni)
    proc = state.monitor(vni)
    running = bool(proc and proc.alive())
    if proc:
        proc.stop(sig)
    state.monitors[str(vni)] = None
    return running


def stop_monitors(state: State) -> list[str]:
    stopped = []
    for key, proc in list(state.monitors.items()):
        if proc and proc.alive():
            proc.stop(signal.SIGTERM, timeout=8)  # let it finish its writes; the namespace goes next anyway
            stopped.append(f"monitor of VNI {key} (pid {proc.pid})")
        state.monitors[key] = None
    for key, proc in list(state.monitor_receivers.items()):
        if proc and proc.alive():
            proc.stop()
            stopped.append(f"alert receiver of VNI {key}'s monitor (pid {proc.pid})")
        state.monitor_receivers[key] = None
    return stopped


def stop_manager(state: State, sig: int = signal.SIGTERM) -> None:
    if state.manager:
        state.manager.stop(sig)
    state.manager = None


def restart_manager(state: State, sig: int = signal.SIGKILL) -> float:
    """Stop the manager (SIGKILL by default: a crash) and start it again; returns the seconds it was down."""
    stopped = time.monotonic()
    stop_manager(state, sig)
    if not (state.receiver and state.receiver.alive()):
        start_receiver(state)
    start_manager(state)
    state.save()
    wait_for_manager(state)
    return time.monotonic() - stopped


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------- the receiver


def start_receiver(state: State) -> None:
    """lab/receiver.py on 127.0.0.1:RECEIVER_PORT in the manager's namespace, appending to state.alerts_path."""
    state.receiver = _start_receiver_in(state, state.plan.manager, "receiver.log")


def _start_receiver_in(state: State, namespace: str, log_name: str, timeout: float = 20) -> Proc:
    """A receiver on 127.0.0.1:RECEIVER_PORT in ``namespace``; every receiver of the lab appends to one file."""
    log_path = state.directory / log_name
    argv = NetNS(namespace).command(
        sys.executable, "-m", "lab.receiver", "--port", str(RECEIVER_PORT), "--output", str(state.alerts_path),
    )
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:  # fresh, so an earlier receiver's "listening" is not taken for this one's
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc.of(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"the alert receiver in {namespace} exited at once: {log_tail(log_path, 5)}")
        if receiver.READY in log_tail(log_path, 5):
            return proc
        time.sleep(0.05)
    proc.stop()
    raise LabError(f"the alert receiver in {namespace} did not start within {timeout:.0f} s: {log_tail(log_path, 5)}")


def stop_receiver(state: State) -> None:
    if state.receiver:
        state.receiver.stop()
    state.receiver = None


# ---------------------------------------------------------------------------------------------- Redis


def start_redis(state: State, timeout: float = 20) -> None:
    """A Redis of the lab's own, on a Unix socket in its directory only (no TCP port), keeping nothing on disk."""
    path = state.redis_socket
    path.unlink(missing_ok=True)
    argv = [
        "redis-server", "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700",
        "--save", "", "--appendonly", "no", "--dir", str(state.directory), "--daemonize", "no",
    ]
    with open(state.directory / "redis.log", "ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    state.redis = Proc.of(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"redis-server exited at once: {log_tail(state.directory / 'redis.log', 5)}")
        if redis_ping(path):
            return
        time.sleep(0.05)
    raise LabError(f"the lab's Redis on {path} does not answer: {log_tail(state.directory / 'redis.log', 5)}")


def redis_ping(path: Path) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        probe.connect(str(path))
        probe.sendall(b"PING\r\n")
        return probe.recv(16).startswith(b"+PONG")
    return False


def stop_redis(state: State | None, socket_path: Path) -> list[str]:
    """Stop the lab's Redis: the one in the state, and (when the state was lost) any on the lab's socket."""
    procs = [state.redis] if state and state.redis else []
    procs += [Proc.of(pid) for pid in redis_pids(socket_path)]
    stopped = []
    for proc in procs:
        if proc.alive():
            proc.stop()
            stopped.append(f"Redis (pid {proc.pid})")
    if state:
        state.redis = None
    return stopped


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
    return _pids_of("socat", f"UNIX-CONNECT:{socket_path}")


def redis_pids(socket_path: Path) -> list[int]:
    """redis-server processes on exactly this lab's socket (for a clean-up after the state was lost)."""
    return _pids_of("redis-server", str(socket_path))


def _pids_of(program: str, argument: str) -> list[int]:
    wanted = argument.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            # Substrings: redis-server rewrites its command line into one "redis-server unixsocket:PATH".
            cmdline = (entry / "cmdline").read_bytes()
            first = cmdline.split(b"\0")[0].split(b" ")[0]
            if Path(first.decode(errors="replace")).name == program and wanted in cmdline:
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
