"""What a running lab remembers: its processes and its state file, and the lock that keeps two commands apart."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from .plan import Config, Plan, make_plan


@dataclasses.dataclass
class Proc:
    """A process we started, recognised by pid and start time so a recycled pid is never signalled."""

    pid: int
    start: str

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, process_start_time(pid) or "")

    def alive(self) -> bool:
        return bool(self.start) and process_start_time(self.pid) == self.start

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


def process_start_time(pid: int) -> str | None:
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
    receiver: Proc | None = None  # the webhook receiver in the manager's namespace
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # host key -> how it was failed
    # With --monitors: the lab's Redis, and per VNI (as a string: JSON keys) its monitor and that namespace's
    # receiver (a monitor delivers alerts too, and reaches only its own namespace's loopback).
    redis: Proc | None = None
    monitors: dict[str, Proc | None] = dataclasses.field(default_factory=dict)
    monitor_receivers: dict[str, Proc | None] = dataclasses.field(default_factory=dict)

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

    @property
    def redis_socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def redis_url(self) -> str:
        """The lab's Redis (with --monitors), for web and monitors alike; empty without monitors."""
        return f"unix://{self.redis_socket}?db=0" if self.config.monitors else ""

    def monitor_log(self, vni: int) -> Path:
        return self.directory / f"monitor-{vni}.log"

    def monitor(self, vni: int) -> Proc | None:
        return self.monitors.get(str(vni))

    @property
    def alerts_path(self) -> Path:
        """The alerts the lab's receiver got, one JSON object a line."""
        return self.directory / "alerts.jsonl"

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
        for key in ("manager", "forwarder", "receiver", "redis"):
            data[key] = Proc(**data[key]) if data.get(key) else None
        for key in ("monitors", "monitor_receivers"):
            data[key] = {vni: Proc(**proc) if proc else None for vni, proc in data.get(key, {}).items()}
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
