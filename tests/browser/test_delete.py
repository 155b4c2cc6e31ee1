"""Deleting a dead host from the dashboard: the server-rendered confirmation, cancel, confirm, every page updated."""

import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from machines.models import Machine, MachineEvent
from tests.support.machines import build_machine

from .support import PHONE, USERNAME, log_in, no_reload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def details(dialog) -> dict[str, str]:
    terms = dialog.locator(".detail-list dt").all_inner_texts()
    values = dialog.locator(".detail-list dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def shown_time(dialog, term: str) -> datetime:
    value = dialog.locator(f".detail-list dt:text-is('{term}') + dd time").get_attribute("datetime")
    return datetime.fromisoformat(value)


def test_delete_shows_the_details_cancel_keeps_and_confirm_removes_it_everywhere(server, new_context, errors):
    dead = build_machine(
        9,
        hostname="storage-9.lab.example",
        ip_address="10.20.0.99",
        mac_address="02:42:0a:14:00:63",
        vni=4242,
        status="unreachable",
        last_seen_at=timezone.now() - timedelta(minutes=27),
        unreachable_since=timezone.now() - timedelta(minutes=25),
    )
    alive = build_machine(1, hostname="web-1.lab.example", status="active")
    Machine.objects.bulk_create([dead, alive])
    dead = Machine.objects.get(ip_address="10.20.0.99")
    alive = Machine.objects.get(ip_address=alive.ip_address)

    page = log_in(new_context(), server, errors)
    other = log_in(new_context(viewport=PHONE, is_mobile=True), server, errors)
    row = page.locator(f"#machine-{dead.pk}")
    card = other.locator(f"#machine-{dead.pk}")  # the same element, laid out as a card on the phone
    dialog = page.locator("#confirm-dialog")
    expect(page.locator(f"#machine-{alive.pk}").get_by_role("link", name=re.compile("^Delete"))).to_have_count(0)

    with no_reload(page), no_reload(other):
        # Delete → the server's confirmation in a modal dialog, with what identifies the machine.
        row.get_by_role("link", name="Delete storage-9.lab.example").click()
        expect(dialog).to_be_visible()
        expect(dialog.locator("#confirm-title")).to_have_text("Delete storage-9.lab.example?")
        expect(dialog.locator(".detail-list")).to_be_visible()
        shown = details(dialog)
        assert shown["Host name"] == "storage-9.lab.example"
        assert shown["IP address"] == "10.20.0.99"
        assert shown["MAC address"] == "02:42:0a:14:00:63"
        assert shown["VNI"] == "4242"
        assert shown["Unreachable since"] == "25 minutes ago"
        assert shown["Last seen"] == "27 minutes ago"
        assert abs((shown_time(dialog, "Unreachable since") - dead.unreachable_since).total_seconds()) < 1
        assert abs((shown_time(dialog, "Last seen") - dead.last_seen_at).total_seconds()) < 1
        # The dialog is modal and its Cancel button has the focus.
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        assert page.evaluate("document.getElementById('confirm-dialog').matches(':modal')")

        # Cancel keeps the machine.
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        expect(row).to_be_visible()
        assert Machine.objects.filter(pk=dead.pk).exists()
        # So does Escape.
        row.get_by_role("link", name="Delete storage-9.lab.example").click()
        expect(dialog.locator("#confirm-delete")).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert Machine.objects.filter(pk=dead.pk).exists()

        # Another operator has the same confirmation open on a phone meanwhile.
        card.get_by_role("link", name="Delete storage-9.lab.example").click()
        expect(other.locator("#confirm-delete")).to_be_visible()

        # Delete → confirm removes it, here and on the other open page.
        row.get_by_role("link", name="Delete storage-9.lab.example").click()
        dialog.locator("#confirm-delete").click()
        expect(dialog.locator("#confirm-title")).to_have_text("Deleted")
        expect(dialog).to_contain_text("storage-9.lab.example (10.20.0.99) was deleted and the failure log records it.")
        expect(row).to_have_count(0)
        expect(page.locator("#summary")).to_contain_text("0 unreachable")
        expect(card).to_have_count(0)
        expect(other.locator("#summary")).to_contain_text("1 machine")
        expect(other.locator(f"#machine-{alive.pk}")).to_be_visible()
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_be_hidden()

        # The other operator's confirmation is now out of date: nothing happens, and they are told why.
        other.locator("#confirm-delete").click()
        expect(other.locator("#confirm-title")).to_have_text("Already deleted")
        other.get_by_role("button", name="Close").click()
        expect(other.locator("#confirm-dialog")).to_be_hidden()

    assert not Machine.objects.filter(pk=dead.pk).exists()
    entry = MachineEvent.objects.get(kind="deleted")
    assert (entry.hostname, entry.ip_address, entry.mac_address) == (
        "storage-9.lab.example",
        "10.20.0.99",
        "02:42:0a:14:00:63",
    )
    assert entry.actor == USERNAME and entry.machine_id is None
    assert "deleted while unreachable; VNI 4242" in entry.detail
    # The out-of-date confirmation is answered 404 (with its explanation), which Chromium always logs.
    errors.assert_none(rf"^Failed to load resource: .* 404 .* @ {server.url}/machines/{dead.pk}/delete/confirm$")


def test_a_viewer_sees_no_delete_and_an_operator_does(server, new_context, errors, django_user_model):
    from django.contrib.auth.models import Group

    from .support import PASSWORD

    viewer = django_user_model.objects.create_user("watcher", password=PASSWORD)
    viewer.groups.add(Group.objects.get(name="viewer"))
    dead = build_machine(9, hostname="storage-9.lab.example", status="unreachable")
    dead.save()
    delete = re.compile("^Delete")
    watching = log_in(new_context(), server, errors, username="watcher")
    expect(watching.locator(f"#machine-{dead.pk}")).to_contain_text("storage-9.lab.example")
    expect(watching.get_by_role("link", name=delete)).to_have_count(0)
    operating = log_in(new_context(viewport=PHONE, is_mobile=True), server, errors)
    expect(operating.locator(f"#machine-{dead.pk}").get_by_role("link", name=delete)).to_be_visible()
    # The push after a registration reaches the viewer without the button too.
    import json
    import urllib.request

    from machines.models import ApiToken
    from machines.tokens import create_token

    token = create_token("browser", ApiToken.Scope.API)[1]
    body = {"hostname": "storage-9b.lab.example", "mac_address": dead.mac_address}
    request = urllib.request.Request(
        f"{server.url}/api/machines/{dead.ip_address}", data=json.dumps(body).encode(), method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    expect(watching.locator(f"#machine-{dead.pk}")).to_contain_text("storage-9b.lab.example")
    expect(watching.get_by_role("link", name=delete)).to_have_count(0)
    errors.assert_none()
