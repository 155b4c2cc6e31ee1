"""The VNI filter in a real browser: with the search, the status filter, pages, the URL and the live push."""

import json
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from machines.models import ApiToken, Machine
from machines.tokens import create_token
from tests.support.machines import build_machine

from .support import PHONE, log_in, no_reload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NO_HORIZONTAL_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def register(raw_token: str, server, ip: str, hostname: str, vni: int) -> None:
    body = {"hostname": hostname, "mac_address": "02:42:0a:63:00:01", "vni": vni}
    request = urllib.request.Request(
        f"{server.url}/api/machines/{ip}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {raw_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


@pytest.mark.parametrize("layout", ["desktop", "phone"])
def test_the_vni_filter_works_with_search_status_pages_and_the_live_push(layout, server, new_context, errors):
    Machine.objects.bulk_create(
        [
            build_machine(1, hostname="db-1.red.example", vni=100, status="unreachable"),
            build_machine(2, hostname="web-1.red.example", vni=100, status="active"),
            build_machine(3, hostname="db-1.blue.example", vni=200, status="active"),
            build_machine(4, hostname="web-1.blue.example", vni=200, status="unreachable"),
            build_machine(5, hostname="bare.example", vni=None, status="pending"),
        ]
        # Enough of VNI 300 for a second page.
        + [build_machine(10 + n, hostname=f"bulk-{n:03d}.green.example", vni=300) for n in range(105)]
    )
    _token, raw = create_token("browser test", ApiToken.Scope.API)
    context = new_context() if layout == "desktop" else new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = log_in(context, server, errors)
    names = page.locator("#machine-rows > tr .cell-hostname a")
    vni_filter = page.locator("#filter-vni")
    expect(vni_filter.locator("option")).to_have_text(["All VNIs", "VNI 100", "VNI 200", "VNI 300", "No VNI"])
    expect(vni_filter).to_have_value("")
    # Per VNI: the ones with unreachable machines first.
    expect(page.locator('#vni-summary > span[id^="vni-"]')).to_have_text(
        ["VNI 100: 2 machines, 1 unreachable", "VNI 200: 2 machines, 1 unreachable", "VNI 300: 105 machines",
         "No VNI: 1 machine"]
    )

    with no_reload(page):
        page.select_option("#filter-vni", "200")
        expect(page).to_have_url(re.compile(r"[?&]vni=200(&|$)"))
        expect(names).to_have_text(["web-1.blue.example", "db-1.blue.example"])
        expect(page.locator("#vni-summary [aria-current=true]")).to_have_text("VNI 200: 2 machines, 1 unreachable")

        # With the search box and the status filter.
        page.fill("#filter-q", "db-")
        expect(page).to_have_url(re.compile(r"[?&]q=db-(&|$)"))
        expect(names).to_have_text(["db-1.blue.example"])
        page.fill("#filter-q", "")
        page.select_option("#filter-status", "unreachable")
        expect(names).to_have_text(["web-1.blue.example"])
        page.select_option("#filter-status", "")
        page.select_option("#filter-vni", "none")
        expect(names).to_have_text(["bare.example"])

        # Pages of one VNI keep it.
        page.select_option("#filter-vni", "300")
        expect(names).to_have_count(100)
        page.locator(".pagination").get_by_role("link", name="Next").click()
        expect(page).to_have_url(re.compile(r"[?&]vni=300&page=2$"))
        expect(names).to_have_count(5)
        expect(vni_filter).to_have_value("300")

        page.select_option("#filter-vni", "100")
        expect(names).to_have_text(["db-1.red.example", "web-1.red.example"])
        # A host of this VNI registers: the open page shows it, and the counts follow; one of another VNI
        # changes the counts but not the list.
        register(raw, server, "10.20.99.1", "api-1.red.example", 100)
        expect(names).to_have_text(["db-1.red.example", "api-1.red.example", "web-1.red.example"])
        expect(page.locator("#vni-summary [aria-current=true]")).to_have_text("VNI 100: 3 machines, 1 unreachable")
        register(raw, server, "10.20.99.2", "api-2.blue.example", 200)
        expect(page.locator("#vni-summary")).to_contain_text("VNI 200: 3 machines, 1 unreachable")
        expect(names).to_have_count(3)

    # The URL carries the VNI: a bookmark opens the same list.
    page.goto(f"{server.url}/?vni=200&status=pending")
    expect(vni_filter).to_have_value("200")
    expect(page.locator("#filter-status")).to_have_value("pending")
    expect(names).to_have_text(["api-2.blue.example"])  # new hosts are pending until checked
    if layout == "phone":
        page.set_viewport_size({"width": 320, "height": 640})
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    errors.assert_none()
