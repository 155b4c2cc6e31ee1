"""Shared pieces of the benchmark harness: statistics, report rows, data sets, the real server, HTTP."""

from __future__ import annotations

import functools
import math
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import sniffio  # noqa: F401  without it httpcore retries a failing import for every lock (requirements-dev.txt)

ROOT = Path(__file__).resolve().parents[2]
PG_SOCKET_DIR = "/var/run/postgresql"
# Every benchmark host lives in 127.10.0.0/16: on the host's lo (register storm, each host from its own
# source address) and inside the sweep namespaces (where all of 127.0.0.0/8 answers pings).
ADDRESS_PREFIX = "127.10"
MAX_HOSTS = 65_536


def addresses(n: int) -> list[str]:
    if not 0 <= n <= MAX_HOSTS:
        raise ValueError(f"at most {MAX_HOSTS} benchmark hosts")
    return [f"{ADDRESS_PREFIX}.{i // 256}.{i % 256}" for i in range(n)]


def index_of(address: str) -> int:
    """The inverse of :func:`addresses`."""
    _a, _b, c, d = address.split(".")
    return int(c) * 256 + int(d)


def mac_for(i: int) -> str:
    return f"02:be:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"


def hostname_for(i: int) -> str:
    return f"bench-{i:05d}.overlay.example"


# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default); NaN when empty."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


@dataclass
class Row:
    """One line of the report: a figure, the reference it is compared with, and the target it must meet."""

    area: str
    figure: str
    value: float | int | str | None
    unit: str = ""
    n: int | None = None
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)


class Deadline:
    """A time budget for one part of the run; every wait loop in the harness checks one."""

    def __init__(self, seconds: float, what: str):
        self.end = time.monotonic() + seconds
        self.what = what

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"{self.what} took longer than its time budget")


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------- data


def reset_inventory() -> None:
    """Empty machines, ping results, failure log and heartbeats (the benchmark database only)."""
    from django.db import connection

    from machines.models import Machine, MachineEvent
    from monitoring.models import MonitorHeartbeat, PingResult

    tables = [model._meta.db_table for model in (PingResult, MachineEvent, MonitorHeartbeat, Machine)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def seed_machines(n: int, *, unreachable: float = 0.01, pending: float = 0.005) -> list[int]:
    """N machines on 127.10.x.y in a realistic mix of states (mostly active, a few down or new)."""
    from django.utils import timezone

    from machines.models import Machine

    now = timezone.now()
    every_unreachable = round(1 / unreachable) if unreachable else 0
    every_pending = round(1 / pending) if pending else 0
    machines = []
    for i, ip in enumerate(addresses(n)):
        status = Machine.Status.ACTIVE
        if every_unreachable and i % every_unreachable == 7:
            status = Machine.Status.UNREACHABLE
        elif every_pending and i % every_pending == 3:
            status = Machine.Status.PENDING
        machines.append(
            Machine(
                hostname=hostname_for(i),
                ip_address=ip,
                mac_address=mac_for(i),
                vni=1000 + i % 8,
                extra_data={"rack": f"r{i % 40:02d}"},
                status=status,
                registered_at=now - timedelta(days=3, seconds=i),
                last_registered_at=now - timedelta(minutes=5),
                last_seen_at=None if status == Machine.Status.PENDING else now - timedelta(seconds=30 + i % 60),
                last_checked_at=None if status == Machine.Status.PENDING else now - timedelta(seconds=i % 60),
                last_rtt_ms=0.05,
                check_interval=60,
                next_check_at=now + timedelta(seconds=60 + i % 60),
                unreachable_since=now - timedelta(minutes=10) if status == Machine.Status.UNREACHABLE else None,
                consecutive_failures=3 if status == Machine.Status.UNREACHABLE else 0,
                last_failure_kind="timeout" if status == Machine.Status.UNREACHABLE else "",
            )
        )
    Machine.objects.bulk_create(machines, batch_size=2000)
    return list(Machine.objects.order_by("pk").values_list("pk", flat=True))


def apply_mix(*, unreachable: float = 0.01, pending: float = 0.005) -> None:
    """Give registered machines the states a running installation has: mostly active, a few down or new."""
    from django.db import connection

    from machines.models import Machine

    every_unreachable, every_pending = round(1 / unreachable), round(1 / pending)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Machine._meta.db_table} SET "  # noqa: S608 (the model's table name)
            "status = CASE WHEN id %% %s = 7 THEN 'unreachable' WHEN id %% %s = 3 THEN 'pending' ELSE 'active' END, "
            "consecutive_failures = CASE WHEN id %% %s = 7 THEN 3 ELSE 0 END, "
            "unreachable_since = CASE WHEN id %% %s = 7 THEN now() - interval '10 minutes' END, "
            "last_failure_kind = CASE WHEN id %% %s = 7 THEN 'timeout' ELSE '' END, "
            "last_seen_at = CASE WHEN id %% %s = 3 THEN NULL ELSE now() - make_interval(secs => 30 + id %% 60) END, "
            "last_checked_at = now() - make_interval(secs => id %% 60), last_rtt_ms = 0.05, check_interval = 60, "
            "next_check_at = now() + interval '1 hour', claim_token = '', claimed_until = NULL",
            [every_unreachable, every_pending, every_unreachable, every_unreachable, every_unreachable, every_pending],
        )


def unix_socket_database_url() -> str:
    """The database as a URL a process inside a network namespace can use (PostgreSQL's Unix socket)."""
    from django.db import connection

    settings = connection.settings_dict
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@/{settings['NAME']}?host={PG_SOCKET_DIR}"


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def session_cookie(username: str = "bench-operator") -> str:
    """A logged-in session for the dashboard and its WebSocket."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="operator"))  # the role that sees Delete, as the page is measured
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


# ---------------------------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The real `manage.py serve --monitor no` (Daphne) on 127.0.0.1, started and stopped by the harness."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.port = free_port()
        self.log_path = log_dir / "server.log"
        self.env = env
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--monitor", "no", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._healthy, 60, 0.2, "the server to answer /health")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log_path}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def rss_kib(self) -> int:
        return vm_kib(self.process.pid, "VmHWM")

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def vm_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of /proc/PID/status in KiB (VmHWM: peak resident set; VmRSS: current)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    first_byte: float  # seconds from handing the request to httpx to its response head
    total: float  # ... to the last byte of the body


def http_client(port: int, *, source: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
    """An httpx client for the server on 127.0.0.1:port, its connections bound to `source` if given.

    No proxies from the environment (the server is on loopback) and a shared SSL context: httpx builds one
    per transport otherwise, loading the CA bundle each time, which a client per host would pay for.
    """
    transport = httpx.AsyncHTTPTransport(local_address=source, verify=_ssl_context(), retries=0)
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", transport=transport, trust_env=False, timeout=timeout
    )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used: every URL is plain http://127.0.0.1


async def timed(client: httpx.AsyncClient, method: str, path: str, **kwargs) -> Reply:
    """One request; the clock starts when it is handed to httpx, so a new connection's set-up counts."""
    request = client.build_request(method, path, **kwargs)
    started = time.perf_counter()
    response = await client.send(request, stream=True)
    first_byte = time.perf_counter() - started
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    return Reply(response.status_code, response.headers, body, first_byte, time.perf_counter() - started)


async def fresh_request(port: int, method: str, path: str, *, source: str | None = None, **kwargs) -> Reply:
    """One request on a client and connection of its own (from `source`), closed after the answer."""
    async with http_client(port, source=source) as client:
        return await timed(client, method, path, **kwargs)
