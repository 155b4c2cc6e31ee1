"""`make screenshots`: the dashboard as operators see it, written to docs/screenshots/*.png.

A throwaway SQLite database (VXLANMGR_VAR_DIR in a temporary directory) holds a realistic set of machines; the
real server (`manage.py serve`) runs without its monitor, because these addresses are made up and must never be
pinged; Chromium takes the pictures.
"""

import os
import shutil
import sys
import tempfile
from datetime import timedelta
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
    # A monitor that reported a moment ago, as in a running installation: no "no monitor" banner.
    MonitorHeartbeat.objects.create(name="vxlanmgr-1:4242", mode="unprivileged", last_beat_at=now)


def shoot(server) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.support import DESKTOP, PHONE, launch_chromium, log_in

    written = []

    def save(page, name: str) -> None:
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
        browser.close()
    return written


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
            written = shoot(server)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
