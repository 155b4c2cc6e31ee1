"""The real server, monitor and Redis as separate processes against the test database."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings as django_settings
from django.db import connection

from .net import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PG_SOCKET_DIR = "/var/run/postgresql"
START_TIMEOUT = 45.0


def database_url() -> str:
    """The test database as a URL a child process can use, even from inside a network namespace."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    # Through the Unix socket: a monitor inside a namespace has no route to 127.0.0.1 of the host.
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@/{settings['NAME']}?host={PG_SOCKET_DIR}"


def process_env(*, share_redis: bool = False, **overrides: str) -> dict[str, str]:
    """The environment of a vxlanmgr process under test: the test database, fast checks, and the test's
    Redis only when asked (a process inside a namespace cannot reach it)."""
    dropped = {"REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VXLANMGR_") and k not in dropped}
    env.update(
        DATABASE_URL=database_url(),
        VXLANMGR_SECRET_KEY="monitor-under-test",
        VXLANMGR_CHECK_INTERVAL="1",
        VXLANMGR_RETRY_INTERVAL="1",
        VXLANMGR_FAILURE_THRESHOLD="3",
        VXLANMGR_BACKOFF_MAX="8",
        VXLANMGR_PING_COUNT="1",
        VXLANMGR_PING_TIMEOUT="0.5",
        VXLANMGR_LOG_LEVEL="INFO",
        # The tests' machines answer on loopback; the policy refuses it unless listed.
        VXLANMGR_ALLOWED_PREFIXES="127.0.0.0/8",
        PYTHONUNBUFFERED="1",
    )
    if share_redis and django_settings.REDIS_URL:
        env["REDIS_URL"] = django_settings.REDIS_URL
    env.update(overrides)
    return env


class MonitorProcess:
    def __init__(self, argv_prefix: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [*argv_prefix, sys.executable, "manage.py", "monitor"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@contextmanager
def running_monitor(argv_prefix: list[str] | None = None, **env_overrides: str):
    log_dir = Path(tempfile.mkdtemp(prefix="vxm-monitor-"))
    monitor = MonitorProcess(argv_prefix or [], process_env(**env_overrides), log_dir / "monitor.log")
    try:
        yield monitor
    finally:
        monitor.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


@contextmanager
def redis_on_unix_socket():
    """A private redis-server reachable through a socket file, so processes in any namespace can share it."""
    directory = Path(tempfile.mkdtemp(prefix="vxm-redis-"))
    path = directory / "redis.sock"
    server = RedisServer(path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class RedisServer:
    def __init__(self, socket_path: Path):
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "777",
             "--save", "", "--appendonly", "no", "--dir", str(self.socket_path.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.socket_path.exists, 10, message="redis-server to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.socket_path.unlink(missing_ok=True)


class Server:
    """`manage.py serve` as a child process on a free loopback port; restartable on the same port."""

    def __init__(self, env: dict[str, str], monitor: str = "no", port: int | None = None):
        self.env = env
        self.monitor = monitor
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="vxm-server-"))
        self.log_path = self.log_dir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--monitor",
                    self.monitor,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/login/", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise AssertionError(f"the server did not answer within {START_TIMEOUT} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """Like a crash: no goodbye to the open sockets."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace: float = 10) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        # On Redis, Daphne sometimes waits up to its 10 s application close timeout for cancelled dashboard
        # sockets after SIGTERM; a test that is over need not wait for that.
        self.stop(grace=3)
        shutil.rmtree(self.log_dir, ignore_errors=True)
