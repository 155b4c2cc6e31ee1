"""A machine's page draws its history on a phone and on a desktop, within the strict CSP, in both schemes."""

import itertools
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.support.machines import build_machine

from .screenshots import seed_history
from .support import DESKTOP, PHONE, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NO_HORIZONTAL_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
# Collects what the CSP refuses; Chromium logs it as a console error too, which PageErrors fails on.
WATCH_CSP = "window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push("\
            "e.violatedDirective + ' ' + e.blockedURI));"
# The drawn size of what the chart draws, so an empty path or a plot squeezed to nothing fails.
DRAWN = """(chart) => Object.fromEntries(["chart-mean", "chart-band", "chart-loss", "chart-outage-mark"].map((name) => {
  const box = chart.querySelector("." + name).getBoundingClientRect();
  return [name, {width: Math.round(box.width), height: Math.round(box.height)}];
}))"""


@pytest.fixture
def machine():
    machine = build_machine(1, hostname="db-primary.example.net")
    machine.save()
    seed_history(machine, timezone.now())
    return machine


def _open(context, server, errors, machine, query=""):
    context.add_init_script(WATCH_CSP)
    return log_in(context, server, errors, path=f"/machines/{machine.pk}{query}", live=False)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_chart_is_drawn_and_fits_the_screen(server, new_context, errors, machine, viewport):
    page = _open(new_context(viewport=viewport), server, errors, machine)
    chart = page.locator("svg.history-chart")
    expect(chart).to_be_visible()
    expect(chart.locator(".chart-mean")).to_have_attribute("d", re.compile(r"^M[\d.,LM]+$"))
    drawn = chart.evaluate(DRAWN)
    assert all(size["width"] > 0 for size in drawn.values()), drawn
    assert drawn["chart-mean"]["height"] > 10, drawn
    box = chart.bounding_box()
    assert 0 < box["x"] and box["x"] + box["width"] <= viewport["width"], box
    assert page.evaluate(NO_HORIZONTAL_SCROLL)
    # The time labels never run into each other: a phone keeps every other one.
    lefts_rights = chart.locator(".chart-time").evaluate_all(
        "labels => labels.filter((l) => l.getClientRects().length).map((l) => {"
        " const r = l.getBoundingClientRect(); return [r.left, r.right]; })"
    )
    assert len(lefts_rights) >= 3
    assert all(right < next_left for (_, right), (next_left, _) in itertools.pairwise(lefts_rights))
    expect(page.locator("#history-summary")).to_contain_text("1,440 checks")
    expect(chart.locator(".chart-outage-mark title")).to_have_count(1)
    assert page.evaluate("window.__csp") == []
    errors.assert_none()


def test_each_range_is_a_link_and_draws_its_own_history(server, new_context, errors, machine):
    page = _open(new_context(viewport=PHONE, is_mobile=True, has_touch=True, color_scheme="dark"), server, errors,
                 machine)
    for label, key in (("7 days", "7d"), ("30 days", "30d"), ("1 year", "1y")):
        page.get_by_role("link", name=label).click()
        expect(page).to_have_url(re.compile(rf"\?history={key}#history$"))
        expect(page.get_by_role("link", name=label)).to_have_attribute("aria-current", "page")
        expect(page.locator("svg.history-chart .chart-mean")).to_have_attribute("d", re.compile(r"^M"))
        expect(page.locator("#history-summary")).to_contain_text(re.compile(r"\d checks, [\d.]+% answered"))
        assert page.evaluate(NO_HORIZONTAL_SCROLL)
    # The dark scheme draws with its own colours: the mean line is the dark accent, not the light one.
    stroke = page.locator(".chart-mean").evaluate("path => getComputedStyle(path).stroke")
    assert stroke == "rgb(68, 147, 248)", stroke
    assert page.evaluate("window.__csp") == []
    errors.assert_none()


def test_a_machine_without_history_says_so(server, new_context, errors):
    machine = build_machine(2)
    machine.save()
    page = _open(new_context(), server, errors, machine)
    expect(page.locator("#history-summary")).to_have_text("No checks in this period.")
    expect(page.locator("svg.history-chart")).to_have_count(0)
    errors.assert_none()
