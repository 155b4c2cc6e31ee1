"""What an operator sees on a desktop and on a phone: the right layout, nothing wider than the screen, filters."""

import re

import pytest
from playwright.sync_api import expect

from machines.models import Machine

from .support import DESKTOP, PHONE, log_in, make_machine, no_reload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NO_HORIZONTAL_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
# 253 characters, the longest name DNS allows: four labels of 63, 63, 63 and 61 characters.
LONG_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
# How many lines the first row's host name, MAC and VNI, and the VNI heading, take.
LINES = """(cells) => {
  const lines = (el) => { const range = document.createRange(); range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size; };
  const row = [...document.querySelectorAll(cells)];
  const heading = [...document.querySelectorAll(".machine-table th")].find((th) => th.textContent.trim() === "VNI");
  return {name: lines(row[1]), mac: lines(row[3]), vni: lines(row[4]), heading: lines(heading)};
}"""


def phone_context(new_context, **options):
    return new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2, **options)


def test_a_desktop_shows_the_table_and_a_phone_the_cards(server, new_context, errors):
    Machine.objects.bulk_create(
        [make_machine(1, status="active"), make_machine(2, status="unreachable"), make_machine(3, status="pending")]
    )
    desktop = log_in(new_context(), server, errors)
    expect(desktop.locator("table.machine-table")).to_be_visible()
    expect(desktop.locator("#machine-cards")).to_be_hidden()
    expect(desktop.locator("#machine-rows tr")).to_have_count(3)
    # Problems first: the unreachable machine heads the table, with its delete button.
    first = desktop.locator("#machine-rows tr").first
    expect(first).to_contain_text("node-002.lab.example")
    expect(first.get_by_role("link", name="Delete node-002.lab.example")).to_be_visible()
    expect(desktop.locator("#summary")).to_contain_text("3 machines")

    phone = log_in(phone_context(new_context), server, errors)
    expect(phone.locator("#machine-cards")).to_be_visible()
    expect(phone.locator("table.machine-table")).to_be_hidden()
    expect(phone.locator("#machine-cards > li")).to_have_count(3)
    card = phone.locator("#machine-cards > li").first
    expect(card).to_contain_text("node-002.lab.example")
    expect(card.get_by_role("link", name="Delete node-002.lab.example")).to_be_visible()
    assert phone.evaluate(NO_HORIZONTAL_SCROLL)
    errors.assert_none()


def test_no_horizontal_scrolling_with_long_names_ipv6_and_a_thousand_machines(server, new_context, errors):
    machines = []
    for n in range(1000):
        ipv6 = f"2001:db8:ffff:eeee:dddd:cccc:{0x1000 + n // 4096:x}:{0x1000 + n:x}"
        name = LONG_NAME if n % 2 == 0 else f"{'x' * 60}-{n}.{'rack' * 15}.example"
        machines.append(
            make_machine(
                n,
                hostname=name,
                ip_address=ipv6 if n % 3 else f"10.30.{n // 250}.{n % 250}",
                status=["unreachable", "pending", "active"][n % 3],
            )
        )
    Machine.objects.bulk_create(machines, batch_size=500)

    page = log_in(phone_context(new_context), server, errors)
    expect(page.locator("#summary")).to_contain_text("1000 machines")
    expect(page.locator(".pagination")).to_contain_text("Page 1 of 10")
    for width in (320, 375, 414, 768, 1280):
        page.set_viewport_size({"width": width, "height": 812})
        table, cards = page.locator("table.machine-table"), page.locator("#machine-cards")
        expect(table if width >= 768 else cards).to_be_visible()
        expect(cards if width >= 768 else table).to_be_hidden()
        sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], f"{width} px wide: content is {sizes[0]} px"
        assert page.evaluate(NO_HORIZONTAL_SCROLL)
        if width >= 768:
            # The long names wrap in their own column; the short columns are not squeezed to a letter a line.
            lines = page.evaluate(LINES, "#machine-rows > tr:first-child > td")
            assert lines["name"] > 1 and lines["mac"] == lines["vni"] == lines["heading"] == 1, (width, lines)

    # The delete confirmation of a machine with the longest name fits the narrowest screen too.
    page.set_viewport_size({"width": 320, "height": 640})
    page.locator("#machine-cards > li").first.get_by_role("link", name=re.compile("^Delete ")).click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_contain_text("a" * 63)
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 320, box
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    errors.assert_none()


@pytest.mark.parametrize("layout", ["desktop", "phone"])
def test_search_and_status_filter_work_without_reloading(layout, server, new_context, errors):
    Machine.objects.bulk_create(
        [
            make_machine(1, hostname="db-primary.lab.example", status="active"),
            make_machine(2, hostname="db-replica.lab.example", status="unreachable"),
            make_machine(3, hostname="web-1.lab.example", status="active"),
            make_machine(4, hostname="web-2.lab.example", status="unreachable"),
            make_machine(5, hostname="cache.lab.example", ip_address="10.99.0.7", status="pending"),
        ]
    )
    context = new_context() if layout == "desktop" else phone_context(new_context)
    page = log_in(context, server, errors)
    items = page.locator("#machine-rows > tr" if layout == "desktop" else "#machine-cards > li")
    visible = items.filter(visible=True)
    shown = visible.locator(".cell-hostname")
    expect(visible).to_have_count(5)

    with no_reload(page):
        page.fill("#filter-q", "db-")
        expect(page).to_have_url(re.compile(r"[?&]q=db-(&|$)"))
        # Unreachable first, then by name: the order the page always uses.
        expect(shown).to_have_text(["db-replica.lab.example", "db-primary.lab.example"])

        page.select_option("#filter-status", "unreachable")
        expect(page).to_have_url(re.compile(r"[?&]status=unreachable(&|$)"))
        expect(shown).to_have_text(["db-replica.lab.example"])

        # By IP address, across statuses again.
        page.select_option("#filter-status", "")
        expect(shown).to_have_text(["db-replica.lab.example", "db-primary.lab.example"])
        page.fill("#filter-q", "10.99.0.7")
        expect(page).to_have_url(re.compile(r"[?&]q=10\.99\.0\.7(&|$)"))
        expect(shown).to_have_text(["cache.lab.example"])

        page.fill("#filter-q", "no-such-host")
        expect(page.locator(".empty")).to_have_text("No machine matches this search.")
        expect(visible).to_have_count(0)

        page.fill("#filter-q", "")
        expect(visible).to_have_count(5)
    # The URL carries the filters, so the address bar can be bookmarked or shared.
    page.goto(f"{server.url}/?status=active")
    expect(page.locator("#filter-status")).to_have_value("active")
    expect(visible).to_have_count(2)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    errors.assert_none()


def test_the_desktop_layout_starts_at_768_pixels(server, new_context):
    Machine.objects.bulk_create([make_machine(1)])
    page = log_in(new_context(viewport={"width": 767, "height": 800}), server)
    expect(page.locator("#machine-cards")).to_be_visible()
    page.set_viewport_size({"width": 768, "height": 800})
    expect(page.locator("table.machine-table")).to_be_visible()
    expect(page.locator("#machine-cards")).to_be_hidden()
    page.set_viewport_size(DESKTOP)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
