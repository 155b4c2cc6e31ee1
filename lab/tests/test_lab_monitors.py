"""Scoped monitors on the VXLAN lab: two overlays (VNI 100 and 200, three hosts each), the web process alone in
the manager's namespace and one monitor per VNI in a namespace of its own, all on one PostgreSQL database
(through its Unix socket) and the lab's own Redis.

One lab serves the module (an `up` is the expensive part); each test leaves it as it found it (every host
active and checked, both monitors running and connected). Its processes write a database of the module's own,
`vxlanmgr_lab_NAME` on the suite's PostgreSQL, which the tests read through a second database alias: the test
database and its per-test flushes stay out of it. The lab is taken down at the end, also when a test failed,
nothing may be left behind, and the database is dropped.
"""

import contextlib
import http.cookiejar
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone

from conftest import require
from lab import manager, netns, receiver, vxlan
from lab.plan import MONITOR_TOOLS, ROOT
from lab.tests.test_lab_e2e import port_open, requirements
from machines.models import Machine, MachineEvent
from monitoring.models import MonitorHeartbeat, Notification
from tests.support.net import free_port, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.postgres]

CHECK, RETRY, THRESHOLD, STALE = 3, 2, 3, 15
SETTINGS = {
    "VXLANMGR_CHECK_INTERVAL": str(CHECK),
    "VXLANMGR_RETRY_INTERVAL": str(RETRY),
    "VXLANMGR_FAILURE_THRESHOLD": str(THRESHOLD),
    "VXLANMGR_PING_COUNT": "1",
    "VXLANMGR_PING_TIMEOUT": "1",
    "VXLANMGR_BACKOFF_MAX": "8",
    # A dead monitor's machines show "not being checked" this long after its last heartbeat (every 10 s).
    "VXLANMGR_MONITOR_STALE": str(STALE),
    # A whole VNI (three hosts) failing is more than two: one grouped message.
    "VXLANMGR_NOTIFY_GROUP_THRESHOLD": "2",
}
VNIS = (100, 200)
LAB_DB = "lab"  # the database alias the tests read the lab's database through


def lab_db(model):
    return model.objects.using(LAB_DB)


@dataclass
class MonitorLab:
    var_dir: Path
    name: str
    port: int
    up_output: str = ""

    @property
    def state(self) -> vxlan.State:
        state = vxlan.load_state(self.var_dir / "lab")
        assert state is not None, "the lab's state file is missing"
        return state

    def run(self, *args: str, timeout: float = 240) -> str:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
        env.update(SETTINGS, VXLANMGR_VAR_DIR=str(self.var_dir))
        result = subprocess.run(
            [sys.executable, "manage.py", "vxlanlab", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        assert result.returncode == 0, f"vxlanlab {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    # -- what the manager says, through its API (with the lab's API token)

    def machine(self, pk: int) -> dict:
        status, body = manager.api(self.state, "GET", f"/api/machines/{pk}")
        assert status == 200 and isinstance(body, dict), f"GET /api/machines/{pk}: {status} {body}"
        return body

    def machines_on(self, vni: int) -> list[dict]:
        return [self.machine(pk) for pk in lab_db(Machine).filter(vni=vni).order_by("pk").values_list("pk", flat=True)]


class LabDatabase:
    """A database of the module's own on the suite's PostgreSQL, created fresh and dropped afterwards."""

    def __init__(self, name: str):
        self.name = name
        self.config = {**settings.DATABASES["default"], "NAME": name}

    def _admin(self, statement: str) -> None:
        config = self.config
        with psycopg.connect(
            dbname="postgres", host=config["HOST"] or None, port=config["PORT"] or None, user=config["USER"] or None,
            password=config["PASSWORD"] or None, autocommit=True,
        ) as connection:
            connection.execute(statement)

    def create(self) -> str:
        """Create it (dropping what a crashed run left); its URL for `vxlanlab up --database-url`."""
        self.drop()
        self._admin(f'CREATE DATABASE "{self.name}"')
        config = self.config
        userinfo = urllib.parse.quote(config["USER"] or "postgres", safe="")
        if config["PASSWORD"]:
            userinfo += ":" + urllib.parse.quote(config["PASSWORD"], safe="")
        return f"postgres://{userinfo}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{self.name}"

    def open_alias(self) -> None:
        connections.settings[LAB_DB] = connections.configure_settings({"default": {}, LAB_DB: self.config})[LAB_DB]

    def close_alias(self) -> None:
        if LAB_DB in connections.settings:
            connection = connections[LAB_DB]
            connection.close()
            if hasattr(connection, "close_pool"):
                connection.close_pool()
            with contextlib.suppress(AttributeError):
                del connections[LAB_DB]
            del connections.settings[LAB_DB]

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def lab(django_db_blocker):
    requirements()
    for tool, package in MONITOR_TOOLS.items():
        require(shutil.which(tool) is not None, f"needs {tool} for the lab's monitors (Debian: {package})")
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/vxlanmgr",
    )
    # A short directory: the web process's and Redis's Unix sockets live in it.
    running = MonitorLab(Path(tempfile.mkdtemp(prefix="vxlab-", dir="/tmp")), f"m{os.getpid() % 10000}", free_port())
    database = LabDatabase(f"vxlanmgr_lab_{running.name}")
    problems = []
    try:
        url = database.create()
        database.open_alias()
        running.up_output = running.run(
            "up", "--name", running.name, "--port", str(running.port), "--hosts", "6",
            "--vnis", ",".join(map(str, VNIS)), "--monitors", str(len(VNIS)), "--database-url", url,
        )
        yield running
    finally:
        problems = _take_down(running)
        with django_db_blocker.unblock():
            database.close_alias()
        database.drop()
    assert not problems, problems


def _take_down(running: MonitorLab) -> list[str]:
    lab_dir = running.var_dir / "lab"
    for log in sorted(lab_dir.glob("*.log")):
        if log.name == "manager.log" or log.name.startswith("monitor-"):
            print(f"--- {log.name} of lab {running.name}\n{log.read_text(errors='replace')[-5000:]}")
    problems = []
    try:
        running.run("down", "--name", running.name)
    except AssertionError as exc:
        problems.append(str(exc))
        vxlan.down(lab_dir, running.name, say=lambda _line: None)
    leftovers = netns.list_namespaces(vxlan.namespace_prefix(running.name))
    if leftovers:
        problems.append(f"namespaces left behind: {leftovers}")
        vxlan.remove_namespaces(running.name)
    if vxlan.forwarder_pids(lab_dir / "web.sock") or port_open(running.port):
        problems.append(f"the forwarder on port {running.port} is still running")
    if manager.redis_pids(lab_dir / "redis.sock"):
        problems.append("the lab's Redis is still running")
    remaining = sorted(p.name for p in lab_dir.iterdir()) if lab_dir.exists() else []
    if remaining not in ([], ["lock"]):
        problems.append(f"files left behind: {remaining}")
    shutil.rmtree(running.var_dir, ignore_errors=True)
    return problems


@pytest.fixture(autouse=True)
def _orm(django_db_blocker):
    # The tests read the lab's database (LAB_DB) as they go; the test database is not used.
    with django_db_blocker.unblock():
        yield


@pytest.fixture(autouse=True)
def _as_found(lab, _orm):
    """A test that failed half-way must not fail the next ones: links up, hosts back, monitors running."""
    yield
    state = lab.state
    # Shown with a failed test's report: what the lab's processes said meanwhile.
    for path in [state.manager_log, *(state.monitor_log(vni) for vni in VNIS)]:
        print(f"--- {path.name} (end)\n{manager.log_tail(path, 40)}")
    repaired = False
    if not all(vxlan.link_is_up(ns, dev) for _label, ns, dev in vxlan.checking_links(state)):
        lab.run("rejoin")
        repaired = True
    if state.failed:
        lab.run("recover", *state.failed)
        repaired = True
    for node in state.plan.monitors:
        proc = state.monitor(node.vni)
        if not (proc and proc.alive()):
            lab.run("start-monitor", str(node.vni))
            repaired = True
    if repaired:
        wait_for(lambda: not lab_db(Machine).exclude(status="active").exists(), 60, interval=0.5,
                 message="every host active again after a repair")


class Dashboard:
    """The dashboard as a signed-in operator's browser fetches it, through the lab's loopback forwarder."""

    def __init__(self, state: vxlan.State):
        self.url = state.url
        self.jar = http.cookiejar.CookieJar()
        # No proxy from the environment: the forwarder is on this machine's loopback.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )
        form = self.get("login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        data = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": "admin", "password": state.admin_password}
        ).encode()
        with self.opener.open(f"{self.url}login/", data=data, timeout=15) as response:
            assert response.url == self.url, f"signing in led to {response.url}"

    def get(self, path: str = "") -> str:
        with self.opener.open(f"{self.url}{path}", timeout=15) as response:
            return response.read().decode()

    def screenshot(self, path: Path) -> None:
        """The dashboard in Chromium, signed in with this session's cookies."""
        from playwright.sync_api import sync_playwright

        from lab.tests.test_lab_e2e import CHROMIUM, CHROMIUM_ARGS

        cookies = [{"name": c.name, "value": c.value, "url": self.url} for c in self.jar]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                context.add_cookies(cookies)
                page = context.new_page()
                page.goto(self.url)
                page.locator("#live-badge[data-state=live]").wait_for(timeout=20_000)
                page.screenshot(path=str(path), animations="disabled", caret="hide")
            finally:
                browser.close()

    def cutoff_notices(self) -> list[str]:
        """The texts of the "monitor cut off" banners on the dashboard."""
        page = self.get()
        return [
            re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)).strip()
            for text in re.findall(r'<div[^>]*class="[^"]*\bcutoff-banner\b[^"]*"[^>]*>(.*?)</div>', page, re.S)
        ]


def all_checked_since(running: MonitorLab, vni: int, moment: datetime) -> bool:
    """Every machine of the VNI checked after `moment` (its stored last check), and the API says it is checked."""
    not_since = Q(last_checked_at__isnull=True) | Q(last_checked_at__lte=moment)
    if lab_db(Machine).filter(not_since, vni=vni).exists():
        return False
    return all(machine["checked"] is True for machine in running.machines_on(vni))


def events_since(moment: datetime) -> list[tuple[str, str, str]]:
    return list(
        lab_db(MachineEvent).filter(created_at__gte=moment).order_by("created_at", "id")
        .values_list("kind", "hostname", "detail")
    )


def test_the_labs_monitors_each_check_their_own_overlay(lab):
    state = lab.state
    plan = state.plan
    assert [(s.vni, s.overlay) for s in plan.segments] == [(100, "10.100.0.0/24"), (200, "10.200.0.0/24")]
    assert [(h.key, h.vni) for h in plan.hosts] == [(f"h{n}", 100 if n <= 3 else 200) for n in range(1, 7)]
    for node in plan.monitors:
        assert f"{node.name} (--scope vni={node.vni})" in lab.up_output
        assert state.monitor(node.vni).alive()
    assert state.redis.alive() and state.redis_url.startswith("unix://")
    assert dict(lab_db(Machine).values_list("ip_address", "vni")) == {h.overlay_ip: h.vni for h in plan.hosts}
    # Each monitor beats under its name, from its own "machine" (host name), with its VNI as its scope.
    beats = dict(lab_db(MonitorHeartbeat).values_list("name", "scope"))
    hosts = dict(lab_db(MonitorHeartbeat).values_list("name", "host"))
    for node in plan.monitors:
        assert (beats.get(node.name), hosts.get(node.name)) == (f"vni={node.vni}", node.hostname)
    started = timezone.now()
    for vni in VNIS:
        wait_for(lambda vni=vni: all_checked_since(lab, vni, started), 30, interval=0.5,
                 message=f"VNI {vni}'s machines checked")
    status = lab.run("status")
    for node in plan.monitors:
        assert re.search(rf"{node.name}: running, pid \d+; --scope vni={node.vni} .*link up", status), status


def test_a_monitor_cut_off_from_its_overlay_says_so_and_judges_nobody(lab):
    """`isolate --vni 100`: monitor 100's vxlan link goes down for longer than threshold x retry interval."""
    state = lab.state
    node = state.plan.monitor(100)
    dashboard = Dashboard(state)
    assert dashboard.cutoff_notices() == []
    on_100 = list(lab_db(Machine).filter(vni=100).values_list("pk", flat=True))
    alerts_before = len(receiver.read(state.alerts_path))
    began = timezone.now()

    lab.run("isolate", "--vni", "100")
    cut_at = time.monotonic()
    wait_for(lambda: lab_db(MachineEvent).filter(kind="monitor_isolated", created_at__gte=began).exists(),
             CHECK + 15, interval=0.2, message="a monitor_isolated log entry")
    # Held well past the point where three failed checks at the retry interval would have made hosts unreachable.
    hold_until = cut_at + THRESHOLD * RETRY + CHECK + 4
    while time.monotonic() < hold_until:
        rows = list(lab_db(Machine).filter(pk__in=on_100).values_list("status", "consecutive_failures"))
        assert rows == [("active", 0)] * len(on_100), f"isolation counted against the hosts: {rows}"
        time.sleep(0.5)
    for machine in lab.machines_on(100):
        assert machine["status"] == "active" and machine["checked"] is False, machine
        assert machine["unchecked_reason"], machine
    assert all(machine["checked"] for machine in lab.machines_on(200))
    notices = dashboard.cutoff_notices()
    assert len(notices) == 1 and node.name in notices[0], notices
    if os.environ.get("VXLANMGR_LAB_ISOLATION_SCREENSHOT"):  # the README's picture of it
        dashboard.screenshot(Path(os.environ["VXLANMGR_LAB_ISOLATION_SCREENSHOT"]))

    rejoined = timezone.now()
    lab.run("rejoin", "--vni", "100")
    wait_for(lambda: lab_db(MachineEvent).filter(kind="monitor_rejoined", created_at__gte=began).exists(),
             RETRY + 15, interval=0.2, message="a monitor_rejoined log entry")
    wait_for(lambda: all_checked_since(lab, 100, rejoined), CHECK + 15, interval=0.5,
             message="VNI 100's machines checked again")
    wait_for(lambda: dashboard.cutoff_notices() == [], 10, interval=0.5, message="the banner to go")

    events = events_since(began)
    assert [(kind, hostname) for kind, hostname, _detail in events] == [
        ("monitor_isolated", node.name), ("monitor_rejoined", node.name)
    ], events
    assert all("VNI 100" in detail for _kind, _hostname, detail in events), events
    assert sorted(lab_db(Machine).values_list("status", flat=True)) == ["active"] * 6
    # One alert that the monitor was cut off and one that it is back (the lab has one channel), both delivered.
    alerts = lab_db(Notification).filter(occurred_at__gte=began)
    assert sorted(alerts.values_list("kind", flat=True)) == ["monitor_isolated", "monitor_rejoined"]
    try:
        wait_for(lambda: not alerts.exclude(state=Notification.State.SENT).exists(), 40, interval=0.5,
                 message="the two alerts sent")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {list(alerts.values_list('kind', 'state', 'last_error'))}") from None
    titles = [record["payload"].get("title", "") for record in receiver.read(state.alerts_path)[alerts_before:]]
    assert len(titles) == 2 and not [title for title in titles if "unreachable" in title], titles


def test_a_whole_overlay_failing_under_a_connected_monitor_is_one_grouped_incident(lab):
    """Every host of VNI 200 stops answering while its monitor's own link stays up: judged as it is."""
    state = lab.state
    on_200 = state.plan.hosts_on(200)
    alerts_before = len(receiver.read(state.alerts_path))
    began = timezone.now()

    lab.run("fail", *(host.key for host in on_200))
    addresses = [host.overlay_ip for host in on_200]
    wait_for(lambda: set(lab_db(Machine).filter(ip_address__in=addresses).values_list("status", flat=True))
             == {"unreachable"}, 60, interval=0.3, message="VNI 200's hosts unreachable")
    for machine in lab.machines_on(200):
        assert machine["status"] == "unreachable" and machine["checked"] is True, machine

    def failure_alerts() -> list[dict]:
        records = receiver.read(state.alerts_path)[alerts_before:]
        return [r["payload"] for r in records if r["payload"].get("type") == "failure"]

    try:
        [group] = wait_for(failure_alerts, 60, interval=0.3, message="the grouped alert")
    except AssertionError as exc:
        got = [record["payload"].get("title") for record in receiver.read(state.alerts_path)[alerts_before:]]
        raise AssertionError(f"{exc}; the receiver got {got}") from None
    time.sleep(3)  # anything sent one per host would have come with the group
    assert failure_alerts() == [group]
    assert "3 machines" in group["title"], group
    for host in on_200:
        assert f"{host.hostname} ({host.overlay_ip})" in group["message"], group
    events = events_since(began)
    assert sorted((kind, hostname) for kind, hostname, _detail in events) == sorted(
        ("unreachable", host.hostname) for host in on_200
    ), events
    assert all(machine["status"] == "active" for machine in lab.machines_on(100))

    lab.run("recover", *(host.key for host in on_200))
    wait_for(lambda: not lab_db(Machine).exclude(status="active").exists(), 30, interval=0.3,
             message="every host active again")


def test_a_dead_monitors_machines_show_unchecked_until_another_takes_over(lab):
    state = lab.state
    lab.run("kill-monitor", "100")
    killed = time.monotonic()
    assert not lab.state.monitor(100)

    def vni_100_unchecked() -> bool:
        assert all(machine["checked"] for machine in lab.machines_on(200)), "VNI 200 lost its monitor too"
        return all(machine["checked"] is False for machine in lab.machines_on(100))

    wait_for(vni_100_unchecked, STALE + 15, interval=0.5, message="VNI 100's machines not being checked")
    assert time.monotonic() - killed <= STALE + 3, "took longer than the stale time"
    for machine in lab.machines_on(100):
        assert machine["status"] == "active" and "100" in (machine["unchecked_reason"] or ""), machine
    assert re.search(r"monitor-100: NOT RUNNING", lab.run("status"))

    started = timezone.now()
    lab.run("start-monitor", "100")
    # The claims the dead monitor held lapse after their lease; then the new one checks them all.
    wait_for(lambda: all_checked_since(lab, 100, started), 60, interval=0.5, message="VNI 100 checked again")
    assert all(machine["checked"] for machine in lab.machines_on(200))
    assert sorted(lab_db(Machine).values_list("status", flat=True)) == ["active"] * 6
    assert state.plan.monitor(100).name in lab.run("status")
