"""The login page, the Japanese dashboard and the dark scheme render cleanly: no console errors, no CSP reports."""

import re

import pytest
from playwright.sync_api import expect

from machines.models import Machine
from tests.support.machines import build_machine

from .support import PASSWORD, PHONE, ROOT, USERNAME, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
CATALOGUE = ROOT / "locale" / "ja" / "LC_MESSAGES" / "django.mo"


def luminance(css_colour: str) -> float:
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_the_login_page_signs_in_and_back_out(server, new_context, errors):
    page = errors.watch(new_context().new_page())
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/login/?next=/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("User name")).to_be_focused()
    page.get_by_label("User name").fill(USERNAME)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/")
    expect(page.locator("#live-badge")).to_have_text("Live")
    page.get_by_role("button", name=f"Sign out {USERNAME}").click()
    expect(page).to_have_url(f"{server.url}/login/")
    errors.assert_none()


def test_the_japanese_dashboard_from_the_browser_language_and_the_switcher(server, new_context, errors):
    Machine.objects.bulk_create([build_machine(1, status="active"), build_machine(2, status="unreachable")])
    # The browser asks for Japanese.
    page = log_in(new_context(locale="ja-JP"), server, errors)
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("#machine-rows tr")).to_have_count(2)
    expect(page.locator("#live-badge")).to_have_attribute("data-state", "live")
    badge = page.locator("#live-badge")
    expect(badge).to_have_text(badge.get_attribute("data-label-live"))
    # The wording has its own tests; here only: with a compiled catalogue the page really is in Japanese.
    if CATALOGUE.exists():
        expect(page.locator("h1")).to_have_text(JAPANESE)
        expect(page.locator("#summary")).to_contain_text(JAPANESE)
        expect(page.locator("#machine-rows tr").first.locator(".status")).to_have_text(JAPANESE)
        # The phone's card labels its fields in Japanese too.
        page.set_viewport_size(PHONE)
        card = page.locator("#machine-rows tr").first
        labels = card.locator("td[data-label]").evaluate_all(
            "cells => cells.map((cell) => getComputedStyle(cell, '::before').content)"
        )
        assert len(labels) == 5 and all(JAPANESE.search(label) for label in labels if label != '"VNI"'), labels
        # The values line up under each other, however wide the Japanese labels are.
        lefts = card.locator("td[data-label]").evaluate_all(
            "cells => cells.map((cell) => { const range = document.createRange();"
            " range.selectNodeContents(cell.lastChild); return Math.round(range.getBoundingClientRect().left); })"
        )
        assert len(set(lefts)) == 1, lefts
        page.set_viewport_size({"width": 1280, "height": 800})

    # An English browser, switched with the language menu.
    english = log_in(new_context(locale="en-US"), server, errors)
    expect(english.locator("html")).to_have_attribute("lang", "en")
    english.select_option("#language-select", "ja")
    expect(english.locator("html")).to_have_attribute("lang", "ja")
    expect(english).to_have_url(f"{server.url}/")
    expect(english.locator("#language-select")).to_have_value("ja")
    expect(english.locator("#live-badge")).to_have_attribute("data-state", "live")
    english.select_option("#language-select", "en")
    expect(english.locator("html")).to_have_attribute("lang", "en")
    expect(english.locator("h1")).to_have_text("Machines")
    errors.assert_none()


def test_the_dark_scheme_on_a_phone(server, new_context, errors):
    Machine.objects.bulk_create(
        [build_machine(1, status="active"), build_machine(2, status="unreachable"), build_machine(3, status="pending")]
    )
    context = new_context(viewport=PHONE, is_mobile=True, color_scheme="dark")
    login = errors.watch(context.new_page())
    login.goto(f"{server.url}/login/")
    assert luminance(login.evaluate("getComputedStyle(document.body).backgroundColor")) < 0.2
    page = log_in(context, server, errors)
    body = page.evaluate("[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]")
    assert luminance(body[0]) < 0.2 and luminance(body[1]) > 0.8, body
    card = page.locator("#machine-rows > tr").first
    expect(card).to_be_visible()
    assert card.evaluate("el => getComputedStyle(el).display") == "flex"  # the phone's card
    assert luminance(card.evaluate("el => getComputedStyle(el).backgroundColor")) < 0.2
    label = card.locator("td[data-label]").first.evaluate("el => getComputedStyle(el, '::before').color")
    assert 0.4 < luminance(label) < 0.8, label  # the muted label colour of the dark scheme
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    errors.assert_none()
