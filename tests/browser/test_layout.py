"""What an operator sees on a desktop and on a phone: the right layout, nothing wider than the screen, filters."""

import re

import pytest
from playwright.sync_api import expect

from machines.models import Machine
from tests.support.machines import build_machine

from .support import DESKTOP, PHONE, log_in, no_reload

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


# What each machine's one element looks like: a row of the table, or a card (a box of its own, its fields in lines).
LAYOUT = """(row) => {
  const style = getComputedStyle(row), cells = [...row.cells];
  const label = (cell) => getComputedStyle(cell, "::before").content.replace(/^"|"$/g, "");
  const heading = getComputedStyle(row.closest("table").tHead).display;
  return {display: style.display, border: style.borderTopWidth, heading,
          labels: cells.map(label).filter((text) => text !== "none" && text !== "normal"),
          shown: cells.filter((cell) => cell.getClientRects().length).length};
}"""


# Where a card's host name, status pill and field values are.
CARD_HEAD = """(rows) => [...document.querySelectorAll(rows)].map((row) => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, middle: (r.top + r.bottom) / 2}; };
  const text = (cell) => { const range = document.createRange(); range.selectNodeContents(cell.lastChild);
    return Math.round(range.getBoundingClientRect().left); };
  return {name: box(row.cells[1].firstElementChild), pill: box(row.cells[0].firstElementChild),
          values: [...row.querySelectorAll("td[data-label]")].map(text)};
})"""


def test_each_machine_is_one_element_a_table_row_on_a_desktop_and_a_card_on_a_phone(server, new_context, errors):
    Machine.objects.bulk_create(
        [build_machine(1, status="active"), build_machine(2, status="unreachable"), build_machine(3, status="pending")]
    )
    desktop = log_in(new_context(), server, errors)
    rows = desktop.locator("#machine-rows > tr")
    expect(rows).to_have_count(3)
    expect(desktop.locator("[id^=machine-card], .machine-cards")).to_have_count(0)
    # Problems first: the unreachable machine heads the table, with its delete button.
    first = rows.first
    expect(first).to_contain_text("node-002.lab.example")
    expect(first.get_by_role("link", name="Delete node-002.lab.example")).to_be_visible()
    expect(desktop.get_by_role("columnheader", name="IP address")).to_be_visible()
    assert first.evaluate(LAYOUT) == {"display": "table-row", "border": "0px", "heading": "table-header-group",
                                      "labels": [], "shown": 9}
    expect(desktop.locator("#summary")).to_contain_text("3 machines")

    phone = log_in(phone_context(new_context), server, errors)
    cards = phone.locator("#machine-rows > tr")
    expect(cards).to_have_count(3)
    card = cards.first
    expect(card).to_contain_text("node-002.lab.example")
    expect(card.get_by_role("link", name="Delete node-002.lab.example")).to_be_visible()
    # A card: a box of its own with each field under its label (the table's headings are not shown), no
    # registration time, and the Delete button only where there is something to delete.
    assert card.evaluate(LAYOUT) == {"display": "flex", "border": "1px", "heading": "none",
                                     "labels": ["IP address", "MAC address", "VNI", "Last seen", "Uptime"], "shown": 8}
    assert cards.nth(1).evaluate(LAYOUT)["shown"] == 7
    expect(card.get_by_role("cell", name=re.compile(r"^IP address 10\.20\.0\.12$"))).to_be_visible()
    # The host name and the status share the first line when they fit, else the status goes below the name;
    # the values line up under each other.
    head = phone.evaluate(CARD_HEAD, "#machine-rows > tr")
    unreachable, pending = head[0], head[1]
    assert unreachable["pill"]["top"] >= unreachable["name"]["bottom"] - 1, unreachable
    assert abs(unreachable["pill"]["left"] - unreachable["name"]["left"]) <= 1, unreachable
    assert abs(pending["pill"]["middle"] - pending["name"]["middle"]) <= 1, pending
    assert pending["pill"]["left"] > pending["name"]["right"], pending
    for card in head:
        assert len(set(card["values"])) == 1, card
    assert phone.evaluate(NO_HORIZONTAL_SCROLL)
    errors.assert_none()


def test_no_horizontal_scrolling_with_long_names_ipv6_and_a_thousand_machines(server, new_context, errors):
    machines = []
    for n in range(1000):
        ipv6 = f"2001:db8:ffff:eeee:dddd:cccc:{0x1000 + n // 4096:x}:{0x1000 + n:x}"
        name = LONG_NAME if n % 2 == 0 else f"{'x' * 60}-{n}.{'rack' * 15}.example"
        machines.append(
            build_machine(
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
    rows = page.locator("#machine-rows > tr")
    expect(rows).to_have_count(100)
    for width in (320, 375, 414, 768, 1024, 1280):
        page.set_viewport_size({"width": width, "height": 812})
        layout = rows.first.evaluate(LAYOUT)
        assert layout["display"] == ("table-row" if width >= 768 else "flex"), (width, layout)
        sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], f"{width} px wide: content is {sizes[0]} px"
        assert page.evaluate(NO_HORIZONTAL_SCROLL)
        if width >= 768:
            # The long names wrap in their own column; the short columns are not squeezed to a letter a line.
            lines = page.evaluate(LINES, "#machine-rows > tr:first-child > td")
            assert lines["name"] > 1 and lines["mac"] == lines["vni"] == lines["heading"] == 1, (width, lines)

    # The delete confirmation of a machine with the longest name fits the narrowest screen too.
    page.set_viewport_size({"width": 320, "height": 640})
    page.locator("#machine-rows > tr").first.get_by_role("link", name=re.compile("^Delete ")).click()
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
            build_machine(1, hostname="db-primary.lab.example", status="active"),
            build_machine(2, hostname="db-replica.lab.example", status="unreachable"),
            build_machine(3, hostname="web-1.lab.example", status="active"),
            build_machine(4, hostname="web-2.lab.example", status="unreachable"),
            build_machine(5, hostname="cache.lab.example", ip_address="10.99.0.7", status="pending"),
        ]
    )
    context = new_context() if layout == "desktop" else phone_context(new_context)
    page = log_in(context, server, errors)
    items = page.locator("#machine-rows > tr")
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
    Machine.objects.bulk_create([build_machine(1)])
    page = log_in(new_context(viewport={"width": 767, "height": 800}), server)
    row = page.locator("#machine-rows > tr")
    expect(row).to_have_count(1)
    assert row.evaluate(LAYOUT)["display"] == "flex"
    page.set_viewport_size({"width": 768, "height": 800})
    assert row.evaluate(LAYOUT) == {"display": "table-row", "border": "0px", "heading": "table-header-group",
                                    "labels": [], "shown": 8}  # no registration time below 1024 px
    page.set_viewport_size({"width": 1024, "height": 800})
    assert row.evaluate(LAYOUT)["shown"] == 9
    page.set_viewport_size(DESKTOP)
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
