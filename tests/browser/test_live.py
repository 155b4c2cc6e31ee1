"""The live dashboard in a real browser: monitor changes within 2 s, highlights, the badge, reconnecting."""

import json
import os
import re
import shutil
import time
import urllib.request

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from conftest import require
from lab import netns
from machines.models import ApiToken, Machine
from machines.tokens import create_token
from tests.support.machines import build_machine
from tests.support.net import wait_for
from tests.support.processes import redis_on_unix_socket, running_monitor

from .support import PHONE, log_in, no_reload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MAX_DELAY = 2.0
# Records (browser clock, ms) when the element with id `id` first carries class `cls`.
WATCH = """([id, cls]) => {
  window.__vxmSeen = null;
  const check = () => {
    const el = document.getElementById(id);
    if (window.__vxmSeen === null && el && el.classList.contains(cls)) window.__vxmSeen = Date.now();
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, attributes: true});
  check();
}"""


def watch(page, machine: Machine, status: str) -> None:
    page.evaluate(WATCH, [f"machine-{machine.pk}", f"row-{status}"])


def wait_for_status(machine: Machine, status: str, timeout: float, server=None, monitor=None) -> float:
    """Poll the database until the monitor has stored `status`; the wall-clock time it was seen."""

    def stored():
        return Machine.objects.filter(pk=machine.pk, status=status).exists()

    log = (monitor.output() if monitor else "") + (server.output() if server else "")
    wait_for(stored, timeout, interval=0.02, message=f"{machine.hostname} to be {status}\n{log}")
    return time.time()


def assert_shown_within(page, machine: Machine, status: str, polled: float) -> float:
    """The row shows `status` within MAX_DELAY of the monitor's write; returns the measured delay."""
    row = page.locator(f"#machine-{machine.pk}")
    expect(row).to_have_class(re.compile(rf"\brow-{status}\b"), timeout=int(MAX_DELAY * 1000) + 3000)
    seen = page.evaluate("window.__vxmSeen") / 1000
    written = Machine.objects.get(pk=machine.pk).updated_at.timestamp()
    delay = seen - written
    assert delay < MAX_DELAY, f"{status} shown {delay:.2f} s after the monitor stored it"
    assert seen - polled < MAX_DELAY, f"{status} shown {seen - polled:.2f} s after the database said so"
    return delay


def test_the_embedded_monitor_shows_a_host_active_within_2_s(start_server, new_context, errors, require_icmp):
    # Loopback answers: once due, the monitor's real ping makes this pending machine active.
    machine = build_machine(1, hostname="loop-1.lab.example", ip_address="127.0.91.1", status="pending")
    machine.save()
    server = start_server("yes")
    page = log_in(new_context(), server, errors)
    phone = log_in(new_context(viewport=PHONE, is_mobile=True), server, errors)
    for view in (page, phone):
        expect(view.locator(f"#machine-{machine.pk}")).to_have_class(re.compile(r"\brow-pending\b"))
        watch(view, machine, "active")
    with no_reload(page), no_reload(phone):
        Machine.objects.filter(pk=machine.pk).update(next_check_at=timezone.now())
        polled = wait_for_status(machine, "active", 10, server)
        delay = assert_shown_within(page, machine, "active", polled)
        assert_shown_within(phone, machine, "active", polled)  # the same element, a card on the phone
    print(f"pending -> active shown {delay:.3f} s after the monitor stored it")
    expect(page.locator(f"#machine-{machine.pk}")).to_contain_text("Active")
    expect(page.locator("#summary")).to_contain_text("1 active")
    expect(page.locator("#live-announcer")).to_have_text(re.compile(r"loop-1\.lab\.example is now Active\."))
    expect(page.locator("#live-badge")).to_have_text("Live")
    errors.assert_none()


@pytest.mark.netns
def test_a_host_that_stops_answering_turns_unreachable_on_the_open_page_within_2_s(start_server, new_context, errors):
    """The production shape: web server and monitor are separate processes sharing Redis; the monitor pings
    a host in a network namespace, which stops and starts answering."""
    require(os.geteuid() == 0 and netns.netns_available(), "needs root and `ip netns` (network namespaces)")
    require(shutil.which("redis-server") is not None, "needs redis-server")
    host_ip = "10.91.0.2"
    machine = build_machine(1, hostname="edge-7.lab.example", ip_address=host_ip, status="pending")
    machine.next_check_at = timezone.now()
    machine.save()
    with netns.Lab() as lab, redis_on_unix_socket() as redis:
        manager, host = lab.namespace(), lab.namespace()
        netns.veth(manager, host, "10.91.0.1/24", f"{host_ip}/24")
        server = start_server("no", REDIS_URL=redis.url)
        with running_monitor(manager.command(), REDIS_URL=redis.url, VXLANMGR_BACKOFF_MAX="2") as monitor:
            wait_for_status(machine, "active", 15, server, monitor)
            page = log_in(new_context(), server, errors)
            row = page.locator(f"#machine-{machine.pk}")
            expect(row).to_have_class(re.compile(r"\brow-active\b"))
            with no_reload(page):
                watch(page, machine, "unreachable")
                host.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
                polled = wait_for_status(machine, "unreachable", 20, server, monitor)
                down = assert_shown_within(page, machine, "unreachable", polled)
                expect(row).to_contain_text("Unreachable")
                expect(row.get_by_role("link", name="Delete edge-7.lab.example")).to_be_visible()
                expect(page.locator("#summary")).to_contain_text("1 unreachable")
                expect(page.locator("#live-announcer")).to_have_text(
                    re.compile(r"edge-7\.lab\.example is now Unreachable\.")
                )

                watch(page, machine, "active")
                host.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
                polled = wait_for_status(machine, "active", 20, server, monitor)
                up = assert_shown_within(page, machine, "active", polled)
                expect(row.get_by_role("link", name="Delete edge-7.lab.example")).to_have_count(0)
            expect(page.locator("#live-badge")).to_have_text("Live")
            print(f"unreachable shown after {down:.3f} s, active again after {up:.3f} s")
    errors.assert_none()


def test_a_pushed_change_is_highlighted_unless_reduced_motion_is_preferred(server, new_context, errors):
    _token, raw = create_token("browser test", ApiToken.Scope.API)
    machine = build_machine(1, hostname="build-3.lab.example", status="active")
    machine.save()
    normal = log_in(new_context(), server, errors)
    calm = log_in(new_context(reduced_motion="reduce"), server, errors)
    calm_phone = log_in(new_context(viewport=PHONE, is_mobile=True, reduced_motion="reduce"), server, errors)
    pages = (normal, calm, calm_phone)
    for page in pages:
        page.evaluate("window.__vxmSamePage = true")

    # The host registers again under a new name: every open page gets the row pushed.
    body = {"hostname": "build-3-renamed.lab.example", "mac_address": machine.mac_address, "vni": machine.vni}
    request = urllib.request.Request(
        f"{server.url}/api/machines/{machine.ip_address}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    row = f"#machine-{machine.pk}"
    for page in pages:
        expect(page.locator(f"{row} .cell-hostname")).to_have_text("build-3-renamed.lab.example")
        expect(page.locator(row)).to_have_class(re.compile(r"\bflash\b"))
        expect(page.locator(row)).to_have_count(1)
        assert page.evaluate("window.__vxmSamePage === true")
    assert calm_phone.locator(row).evaluate("el => getComputedStyle(el).display") == "flex"  # a card

    def animation(page, selector):
        return page.locator(selector).evaluate("el => getComputedStyle(el).animationName")

    assert animation(normal, row) == "flash"
    assert animation(calm, row) == "none"
    assert animation(calm_phone, row) == "none"
    errors.assert_none()


def test_the_badge_follows_the_connection_and_the_page_resyncs_after_a_restart(server, new_context, errors):
    Machine.objects.bulk_create([build_machine(1, status="active")])
    page = log_in(new_context(), server, errors)
    badge = page.locator("#live-badge")
    expect(badge).to_have_text("Live")
    timings = {}
    with no_reload(page):
        for n, how in ((2, "killed"), (3, "stopped")):
            server.kill() if how == "killed" else server.stop()
            expect(badge).to_have_text("Reconnecting…")
            expect(badge).to_have_attribute("data-state", "reconnecting")
            # Registered while no page can be told: only the re-sync after reconnecting can show it.
            missed = build_machine(n, hostname=f"registered-while-{how}.lab.example", status="pending")
            missed.save()
            started = time.monotonic()
            server.start()
            # The extension's reconnect backoff grows while the server is down (full jitter, up to 8 s here).
            expect(badge).to_have_text("Live", timeout=40_000)
            expect(page.locator(f"#machine-{missed.pk}")).to_contain_text(missed.hostname)
            expect(page.locator("#summary")).to_contain_text(f"{n} machines")
            timings[how] = time.monotonic() - started
    print("re-synced after restart: " + ", ".join(f"{how} {seconds:.1f} s" for how, seconds in timings.items()))
    # While the server is down the browser reports each refused connection, and htmx logs the socket's error
    # event with it ("[object Event]"); nothing else may go wrong.
    errors.assert_none(r"^WebSocket connection to '.*' failed: .*ERR_CONNECTION_REFUSED", r"^\[object Event\] @ ")
