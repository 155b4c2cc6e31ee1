"""`make screenshots`: the dashboard and a machine's page as operators see them, written to docs/screenshots/*.png.

A throwaway SQLite database (VXLANMGR_VAR_DIR in a temporary directory) holds a realistic set of machines; the
real server (`manage.py serve`) runs without its monitor, because these addresses are made up and must never be
pinged; Chromium takes the pictures. Names as arguments (`screenshots.py machine-history`) write only those.
"""

import math
import os
import random
import re
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "screenshots"

# hostname, overlay address, VNI, status, minutes since last seen (None: never)
FLEET = [
    ("hv-fra1-01.dc.example.net", "10.240.0.11", 4001, "active", 0.3),
    ("hv-fra1-02.dc.example.net", "10.240.0.12", 4001, "active", 0.5),
    ("hv-fra1-03.dc.example.net", "10.240.0.13", 4001, "unreachable", 47),
    ("hv-fra1-04.dc.example.net", "10.240.0.14", 4001, "active", 0.2),
    ("db-primary.fra1.dc.example.net", "10.240.1.21", 4002, "active", 0.4),
    ("db-replica-1.fra1.dc.example.net", "10.240.1.22", 4002, "active", 0.6),
    ("db-replica-2.fra1.dc.example.net", "10.240.1.23", 4002, "unreachable", 185),
    ("k8s-worker-07.ams2.dc.example.net", "fd00:4003::7", 4003, "active", 0.3),
    ("k8s-worker-08.ams2.dc.example.net", "fd00:4003::8", 4003, "active", 0.8),
    ("k8s-worker-09.ams2.dc.example.net", "fd00:4003::9", 4003, "pending", None),
    ("edge-lb-1.ams2.dc.example.net", "10.240.2.31", 4003, "active", 0.1),
    ("backup-01.ams2.dc.example.net", "10.240.2.40", 4003, "active", 0.9),
]
HISTORY_HOST = "db-primary.fra1.dc.example.net"


def seed_history(machine, now: datetime, seed: int = 7) -> None:
    """A year of plausible history for `machine`, as the monitor and the folds would have left it: raw results
    every minute for the last day, hourly buckets for 30 days and daily ones for a year before those, and three
    outages in the log (2 h 40 min ago for 25 minutes, 12 days and 150 days ago). The browser tests use it too."""
    from machines.models import MachineEvent
    from monitoring.history import DAY, HOUR, floor
    from monitoring.models import DailyBucket, HourlyBucket, PingResult

    rng = random.Random(seed)
    outages = [(now - timedelta(hours=2, minutes=40), timedelta(minutes=25)),
               (now - timedelta(days=12, hours=5), timedelta(hours=3)), (now - timedelta(days=150), timedelta(hours=9))]

    def down(at: datetime, length: timedelta = timedelta()) -> float:
        """The share of [at, at + length) inside an outage."""
        if not length:
            return float(any(start <= at < start + span for start, span in outages))
        overlap = sum((max(timedelta(), min(at + length, start + span) - max(at, start)) for start, span in outages),
                      timedelta())
        return overlap / length

    def rtt(at: datetime) -> float:
        # Busier (slower) in the afternoon, and a little slower month by month.
        hour = at.astimezone(UTC).hour + at.minute / 60
        return 0.32 + 0.12 * math.sin((hour - 9) / 24 * 2 * math.pi) + (now - at).days * -0.0002

    raw, hours, days = [], [], []
    # 1,440 checks, the newest a second before `now`: the page, rendered a little later, still sees all of them.
    start = now - DAY + timedelta(seconds=59)
    while start < now:
        failed = down(start)
        loss = 1.0 if failed else (0.5 if rng.random() < 0.02 else 0.0)
        value = None if failed else round(rtt(start) * (1 + rng.random() * 0.5) + (rng.random() < 0.004) * 1.5, 3)
        raw.append(PingResult(machine=machine, checked_at=start, ok=not failed, rtt_ms=value, loss=loss,
                              failure="timeout" if failed else ""))
        start += timedelta(minutes=1)
    folded = floor(now - DAY, HOUR)
    for n in range(30 * 24):
        start = folded - n * HOUR
        answered = round(60 * (1 - down(start, HOUR)))
        mean = rtt(start) * (1.2 + rng.random() * 0.1)
        hours.append(HourlyBucket(machine=machine, start=start, checks=60, answered=answered,
                                  loss_sum=60 - answered + rng.choice([0, 0, 0, 0.5, 1]), rtt_min=rtt(start) * 0.9,
                                  rtt_sum=mean * answered if answered else None,
                                  rtt_max=mean * (2 + rng.random() * 4) if answered else None,
                                  unreachable_seconds=round(3600 * down(start, HOUR))))
    for n in range(30, 365):
        start = floor(now, DAY) - n * DAY
        answered = round(1440 * (1 - down(start, DAY)))
        mean = (0.32 - (now - start).days * 0.0002) * (1.2 + rng.random() * 0.1)  # the afternoons even out
        days.append(DailyBucket(machine=machine, start=start, checks=1440, answered=answered,
                                loss_sum=1440 - answered + rng.randint(0, 6), rtt_min=0.18, rtt_sum=mean * answered,
                                rtt_max=mean * (4 + rng.random() * 6),
                                unreachable_seconds=round(86400 * down(start, DAY))))
    PingResult.objects.bulk_create(raw)
    HourlyBucket.objects.bulk_create(hours)
    DailyBucket.objects.bulk_create(days)
    for start, span in outages:
        for kind, at in (("unreachable", start), ("recovered", start + span)):
            MachineEvent.objects.create(machine=machine, hostname=machine.hostname, ip_address=machine.ip_address,
                                        mac_address=machine.mac_address, kind=kind, created_at=at)


def environment(var_dir: Path) -> dict[str, str]:
    dropped = {"DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VXLANMGR_") and k not in dropped}
    env.update(
        VXLANMGR_VAR_DIR=str(var_dir),
        VXLANMGR_SECRET_KEY="screenshots-only-not-a-secret",
        VXLANMGR_EMBEDDED_MONITOR="0",
        VXLANMGR_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="vxlanmgr.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def seed() -> None:
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    django.setup()
    from machines.models import Machine
    from monitoring.models import MonitorHeartbeat
    from tests.browser.support import PASSWORD, USERNAME
    from tests.support.machines import build_machine

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import Group

    operator = get_user_model().objects.create_user(USERNAME, password=PASSWORD, is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    now = timezone.now()
    machines = []
    for n, (hostname, ip, vni, status, seen) in enumerate(FLEET, start=1):
        machine = build_machine(n, hostname=hostname, ip_address=ip, vni=vni, status=status)
        machine.mac_address = f"52:54:00:{0x3A + n:02x}:{0x10 * n % 256:02x}:{0x7C ^ n:02x}"
        machine.registered_at = now - timedelta(days=12 - n % 5, hours=n)
        machine.last_seen_at = now - timedelta(minutes=seen) if seen is not None else None
        if status == "unreachable":
            machine.unreachable_since = now - timedelta(minutes=seen - 1)
        if status == "pending":
            machine.registered_at = machine.last_registered_at = now - timedelta(seconds=40)
        machines.append(machine)
    Machine.objects.bulk_create(machines)
    seed_history(Machine.objects.get(hostname=HISTORY_HOST), now)
    # A monitor that reported a moment ago, as in a running installation: no "no monitor" banner.
    MonitorHeartbeat.objects.create(name="vxlanmgr-1:4242", mode="unprivileged", last_beat_at=now)


def shoot(server, only: set[str]) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.support import DESKTOP, PHONE, launch_chromium, log_in

    written = []
    history_page = f"/machines/{machine_pk(HISTORY_HOST)}"  # the ORM, before Playwright's event loop runs

    def save(page, name: str) -> None:
        if only and name not in only:
            return
        path = OUT / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled", caret="hide")
        written.append(path)

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        desktop = browser.new_context(viewport=DESKTOP, locale="en-US")
        page = log_in(desktop, server)
        expect(page.locator("#machine-rows tr")).to_have_count(len(FLEET))
        page.mouse.move(0, 0)
        save(page, "dashboard-desktop")
        page.get_by_role("link", name="Delete hv-fra1-03.dc.example.net").click()
        expect(page.locator("#confirm-delete")).to_be_visible()
        save(page, "delete-dialog-desktop")

        for name, scheme in (("dashboard-phone", "light"), ("dashboard-phone-dark", "dark")):
            phone = browser.new_context(
                viewport=PHONE,
                is_mobile=True,
                has_touch=True,
                device_scale_factor=2,
                color_scheme=scheme,
                locale="en-US",
            )
            page = log_in(phone, server)
            expect(page.locator("#machine-rows > tr")).to_have_count(len(FLEET))
            save(page, name)

        # A machine's page, scrolled to its history.
        page = log_in(browser.new_context(viewport=DESKTOP, locale="en-US"), server, live=False, path=history_page)
        page.locator("#history").evaluate("section => section.scrollIntoView()")
        expect(page.locator(".history-chart .chart-mean")).to_have_attribute("d", re.compile(r"^M"))
        save(page, "machine-history")
        browser.close()
    return written


def machine_pk(hostname: str) -> int:
    from machines.models import Machine

    return Machine.objects.get(hostname=hostname).pk


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    var_dir = Path(tempfile.mkdtemp(prefix="vxm-screenshots-"))
    env = environment(var_dir)
    os.environ.clear()
    os.environ.update(env)
    from tests.browser.support import CHROMIUM
    from tests.support.processes import Server

    if not Path(CHROMIUM).exists():
        print(f"screenshots need Chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 1
    try:
        seed()
        OUT.mkdir(parents=True, exist_ok=True)
        server = Server(env, monitor="no").start()
        try:
            written = shoot(server, set(sys.argv[1:]))
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
