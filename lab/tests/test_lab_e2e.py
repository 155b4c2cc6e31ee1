"""End to end on the VXLAN lab: `manage.py vxlanlab` for real, hosts in namespaces, the dashboard in Chromium.

The lab's manager uses the test database (SQLite file or PostgreSQL through its Unix socket), so the test
reads the machines and the failure log with the ORM while Chromium watches the dashboard through the
lab's loopback forwarder. Every lab is taken down by `vxlanlab down` in a fixture, also when the test fails,
and the fixture checks that nothing is left behind.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from conftest import require
from lab import netns, vxlan
from machines.models import Machine, MachineEvent
from monitoring.models import PingResult
from tests.support.net import free_port, wait_for
from tests.support.processes import database_url

pytestmark = [pytest.mark.netns, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--no-first-run",
]
# Fast but not twitchy on a loaded two-core machine: unreachable ~3 + 3 x (1 + 2) s after a host goes silent.
FAST = {
    "VXLANMGR_CHECK_INTERVAL": "3",
    "VXLANMGR_RETRY_INTERVAL": "2",
    "VXLANMGR_FAILURE_THRESHOLD": "3",
    "VXLANMGR_PING_COUNT": "1",
    "VXLANMGR_PING_TIMEOUT": "1",
    "VXLANMGR_BACKOFF_MAX": "8",
}
# A check that was in flight when the manager was killed stays claimed for its lease
# (PING_COUNT x PING_TIMEOUT + 30 s) before the restarted monitor takes it again.
AFTER_RESTART = 75


def vxlanlab(var_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(FAST, VXLANMGR_VAR_DIR=str(var_dir))
    return subprocess.run(
        [sys.executable, "manage.py", "vxlanlab", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RunningLab:
    var_dir: Path
    name: str
    port: int
    up_output: str

    @property
    def state(self) -> vxlan.State:
        state = vxlan.load_state(self.var_dir / "lab")
        assert state is not None, "the lab's state file is missing"
        return state

    def run(self, *args: str) -> str:
        result = vxlanlab(self.var_dir, *args)
        assert result.returncode == 0, f"vxlanlab {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout


def requirements() -> None:
    require(os.geteuid() == 0 and netns.netns_available(), "needs root and `ip netns` (Debian: iproute2)")
    for tool, package in vxlan.REQUIRED_TOOLS.items():
        require(shutil.which(tool) is not None, f"needs {tool} for the lab (Debian: {package})")


@pytest.fixture
def start_lab(transactional_db):
    """Start labs (each with its own var dir, name and port); every one is taken down and checked afterwards."""
    requirements()
    started: list[RunningLab] = []

    def start(*args: str) -> RunningLab:
        # A short directory: the manager's Unix socket lives in it.
        running = RunningLab(Path(tempfile.mkdtemp(prefix="vxlab-", dir="/tmp")), "", free_port(), "")
        running.name = f"t{os.getpid() % 10000}{len(started)}"
        started.append(running)
        result = vxlanlab(running.var_dir, "up", "--name", running.name, "--port", str(running.port), *args)
        running.up_output = result.stdout + result.stderr
        assert result.returncode == 0, f"vxlanlab up failed:\n{running.up_output}"
        return running

    yield start
    problems = []
    for running in started:
        log = running.var_dir / "lab" / "manager.log"
        if log.exists():
            print(f"--- manager log of lab {running.name}\n{log.read_text(errors='replace')[-6000:]}")
        result = vxlanlab(running.var_dir, "down", "--name", running.name)
        if result.returncode != 0:
            problems.append(f"vxlanlab down: {result.stdout}{result.stderr}")
            vxlan.down(running.var_dir / "lab", running.name, say=lambda _line: None)
        leftovers = netns.list_namespaces(vxlan.namespace_prefix(running.name))
        if leftovers:
            problems.append(f"namespaces left behind: {leftovers}")
            vxlan.remove_namespaces(running.name)
        if vxlan.forwarder_pids(running.var_dir / "lab" / "web.sock") or port_open(running.port):
            problems.append(f"the forwarder on port {running.port} is still running")
        remaining = sorted(p.name for p in (running.var_dir / "lab").iterdir()) if running.var_dir.exists() else []
        if remaining not in ([], ["lock"]):
            problems.append(f"files left behind: {remaining}")
        shutil.rmtree(running.var_dir, ignore_errors=True)
    assert not problems, problems


def statuses() -> dict[str, str]:
    return dict(Machine.objects.values_list("ip_address", "status"))


def log_kinds(ip: str) -> list[str]:
    return list(MachineEvent.objects.filter(ip_address=ip).order_by("created_at", "id").values_list("kind", flat=True))


def test_the_lab_end_to_end(start_lab, monkeypatch):
    """Register, fail, recover, crash the manager mid-run, delete: what an operator does on the lab."""
    require(shutil.which(CHROMIUM) is not None, f"needs Chromium at {CHROMIUM} (Debian: chromium)")
    started = time.monotonic()

    def phase(name: str) -> None:  # shown with the output of a failed run
        print(f"{time.monotonic() - started:6.1f} s  {name}")

    running = start_lab("--database-url", database_url())
    phase("up")
    state = running.state
    plan = state.plan
    assert len(plan.hosts) == 5 and plan.config.vni == 100

    # 1. Five hosts registered themselves (the script found each one's vxlan link, address, MAC and VNI, and
    #    its own host name) and turned active; `up` printed how to reach the dashboard.
    for text in (state.url, state.admin_password, state.register_token):
        assert text in running.up_output
    assert state.admin_created
    machines = {machine.ip_address: machine for machine in Machine.objects.all()}
    assert set(machines) == {host.overlay_ip for host in plan.hosts}
    for host in plan.hosts:
        machine = machines[host.overlay_ip]
        mac = netns.NetNS(host.namespace).run("cat", f"/sys/class/net/{plan.vxlan_dev}/address").stdout.strip()
        assert (machine.status, machine.hostname, machine.vni, machine.mac_address) == (
            "active", host.hostname, 100, mac,
        )
    status_text = running.run("status")
    for host in plan.hosts:
        assert re.search(rf"{host.key}\s.*{re.escape(host.overlay_ip)}\s+active", status_text), status_text

    # 2. A host that registers another host's address with its register token is refused.
    h3, h4 = plan.hosts[2], plan.hosts[3]
    forged = vxlan.register(state, h3, "--ip", h4.overlay_ip)
    assert forged.returncode == 3, forged.stderr
    assert "HTTP 403" in forged.stderr and f"({h3.overlay_ip})" in forged.stderr, forged.stderr
    assert Machine.objects.get(ip_address=h4.overlay_ip).hostname == h4.hostname

    from playwright.sync_api import expect, sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM must still be usable meanwhile.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    h2 = plan.hosts[1]
    pk = machines[h2.overlay_ip].pk
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{state.url}login/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", state.admin_password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(state.url)
            badge, row = page.locator("#live-badge"), page.locator(f"#machine-{pk}")
            expect(badge).to_have_attribute("data-state", "live")
            expect(page.locator("#machine-rows tr.row-active")).to_have_count(5)
            page.evaluate("window.labNotReloaded = true")

            # 3. `fail` one host: unreachable after the threshold, on the open page without a reload.
            running.run("fail", h2.key)
            expect(row).to_have_class(re.compile(r"\brow-unreachable\b"), timeout=60_000)
            phase("failed host shown unreachable")
            machine = Machine.objects.get(pk=pk)
            assert machine.status == "unreachable" and machine.consecutive_failures == 3
            assert log_kinds(h2.overlay_ip) == ["unreachable"]
            if os.environ.get("VXLANMGR_LAB_SCREENSHOT"):
                page.screenshot(path=os.environ["VXLANMGR_LAB_SCREENSHOT"])

            # 4. `recover`: it registers again, which has it checked at once: active without waiting for backoff.
            before = time.monotonic()
            assert "registered" in running.run("recover", h2.key)
            expect(row).to_have_class(re.compile(r"\brow-active\b"), timeout=15_000)
            assert time.monotonic() - before < 15
            phase("recovered host shown active")
            assert log_kinds(h2.overlay_ip) == ["unreachable", "recovered"]

            # 5. Fail it again and kill the manager (web and monitor) with SIGKILL after its first failed
            #    check: the restarted monitor goes on counting from the stored state.
            running.run("fail", h2.key)
            counting = wait_for(
                lambda: Machine.objects.filter(pk=pk, consecutive_failures__gte=1).first(), 30,
                interval=0.05, message="the first failed check",
            )
            mid_run = counting.status == "active"
            pings_before = PingResult.objects.count()
            killed_at = timezone.now()
            running.run("restart")
            phase(f"manager killed and restarted, {counting.consecutive_failures} failure(s) counted before")
            assert Machine.objects.count() == 5 and PingResult.objects.count() >= pings_before
            expect(row).to_have_class(re.compile(r"\brow-unreachable\b"), timeout=AFTER_RESTART * 1000)
            expect(badge).to_have_attribute("data-state", "live", timeout=30_000)
            phase("unreachable after the restart")
            assert log_kinds(h2.overlay_ip) == ["unreachable", "recovered", "unreachable"]
            if mid_run:
                # The failure counted before the crash still counts: unreachable came with the third failed
                # check overall, not the third after the restart.
                done = counting.consecutive_failures
                failed = PingResult.objects.filter(machine_id=pk, ok=False, checked_at__gte=counting.last_checked_at)
                failed = list(failed.order_by("checked_at").values_list("checked_at", flat=True))
                logged = MachineEvent.objects.filter(ip_address=h2.overlay_ip, kind="unreachable").latest("created_at")
                assert failed[0] < killed_at
                third = failed[3 - done]
                assert third <= logged.created_at and (len(failed) == 4 - done or logged.created_at < failed[4 - done])
            # Every other host is still checked after the restart.
            wait_for(
                lambda: all(
                    PingResult.objects.filter(machine__ip_address=host.overlay_ip, checked_at__gt=killed_at).exists()
                    for host in plan.hosts if host is not h2
                ),
                AFTER_RESTART, message="checks of every host after the restart",
            )
            assert all(status == "active" for ip, status in statuses().items() if ip != h2.overlay_ip)

            # 6. Delete it from the dashboard, after the confirmation.
            row.get_by_role("link", name=f"Delete {h2.hostname}").click()
            page.locator("#confirm-delete").click()
            expect(page.locator("#confirm-title")).to_have_text("Deleted")
            expect(row).to_have_count(0)
            expect(page.locator("#machine-rows tr")).to_have_count(4)
            assert page.evaluate("window.labNotReloaded") is True
            phase("deleted from the dashboard")
        finally:
            browser.close()
            # Inside this block the ORM ran in Playwright's greenlet context, on a connection of its own:
            # close it, or PostgreSQL refuses to drop the test database ("accessed by other users").
            connections.close_all()

    assert not Machine.objects.filter(ip_address=h2.overlay_ip).exists()
    assert log_kinds(h2.overlay_ip) == ["unreachable", "recovered", "unreachable", "deleted"]
    assert sorted(statuses().values()) == ["active"] * 4
    phase("done")
    assert time.monotonic() - started < 240


def test_down_cleans_up_even_when_the_state_file_is_lost(start_lab):
    """A one-host lab on its own SQLite database (the `make lab` default); then the state file vanishes."""
    running = start_lab("--hosts", "1", "--vni", "4242", "--overlay", "10.42.0.0/24")
    state = running.state
    (host,) = state.plan.hosts
    assert state.database_url == "" and (running.var_dir / "lab" / "var" / "vxlanmgr.sqlite3").exists()
    assert not Machine.objects.exists()  # the test database was not touched
    assert vxlan.machines(state)[host.overlay_ip]["vni"] == 4242
    assert re.search(r"h1\s.*10\.42\.0\.11\s+active\s+answering", running.run("status"))
    assert port_open(running.port) and netns.list_namespaces(vxlan.namespace_prefix(running.name))

    (running.var_dir / "lab" / "state.json").unlink()
    output = running.run("down", "--name", running.name)
    assert "removed forwarder" in output and f"removed namespace {host.namespace}" in output
    assert not netns.list_namespaces(vxlan.namespace_prefix(running.name))
    assert not port_open(running.port)
