"""What the browser tests and `make screenshots` share: Chromium's launch, the real server as a process, login."""

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
USERNAME = "operator"
PASSWORD = "browser-test-password-42"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
START_TIMEOUT = 45.0


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`manage.py serve` as a child process on a free loopback port; restartable on the same port."""

    def __init__(self, env: dict[str, str], monitor: str = "no", port: int | None = None):
        self.env = env
        self.monitor = monitor
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="vxm-browser-"))
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


class PageErrors:
    """Console errors and uncaught exceptions of every page it watches."""

    def __init__(self):
        self.console: list[str] = []
        self.uncaught: list[str] = []

    def watch(self, page):
        def on_console(message):
            if message.type == "error":
                self.console.append(f"{message.text} @ {message.location.get('url', '')}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.uncaught.append(str(error)))
        return page

    def assert_none(self, *allowed: str) -> None:
        """No uncaught exception, and no console error except those matching an `allowed` regex."""
        assert not self.uncaught, self.uncaught
        unexpected = [text for text in self.console if not any(re.search(pattern, text) for pattern in allowed)]
        assert not unexpected, unexpected


def log_in(context, server: Server, errors: PageErrors | None = None, path: str = "/", live: bool = True):
    """Sign in through the real login page; by default wait for the dashboard's live channel too."""
    from playwright.sync_api import expect

    page = context.new_page()
    if errors:
        errors.watch(page)
    page.goto(f"{server.url}{path}")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    page.wait_for_url(re.compile(re.escape(f"{server.url}{path}") + r"$"))
    if live:
        expect(page.locator("#live-badge")).to_have_attribute("data-state", "live")
    return page


@contextmanager
def no_reload(page):
    """Fails if the page navigated (reloaded) inside the block."""
    page.evaluate("window.__vxmSamePage = true")
    yield
    assert page.evaluate("window.__vxmSamePage === true"), "the page reloaded"


def make_machine(n: int, **fields):
    """A machine as the monitor would have left it; status decides the timestamps."""
    from django.utils import timezone

    from machines.models import Machine

    now = timezone.now()
    status = fields.pop("status", "active")
    values = {
        "hostname": f"node-{n:03d}.lab.example",
        "ip_address": f"10.20.{n // 200}.{n % 200 + 10}",
        "mac_address": f"02:42:0a:14:{n // 256:02x}:{n % 256:02x}",
        "vni": 4100 + n % 4,
        "status": status,
        "registered_at": now - timedelta(days=3, minutes=n),
        "last_registered_at": now - timedelta(hours=2, minutes=n),
        # Far in the future: an embedded monitor leaves these alone unless a test says otherwise.
        "next_check_at": now + timedelta(hours=1),
    }
    if status == "active":
        values |= {"last_seen_at": now - timedelta(seconds=20 + n), "last_rtt_ms": 0.4 + n / 100}
    elif status == "unreachable":
        values |= {
            "last_seen_at": now - timedelta(minutes=40 + n),
            "unreachable_since": now - timedelta(minutes=38 + n),
            "consecutive_failures": 5,
            "check_interval": 160,
        }
    values |= fields
    return Machine(**values)
