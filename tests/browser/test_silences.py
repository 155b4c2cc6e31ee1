"""Silences on the dashboard, in a real browser: an operator silences a machine, every open dashboard marks it,
then the operator ends the silence and the mark goes."""

import re

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import expect

from machines.models import Machine
from monitoring.models import Silence
from tests.support.machines import build_machine

from .support import PASSWORD, USERNAME, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_silences_a_machine_and_ends_it(server, new_context, errors):
    Machine.objects.bulk_create([
        build_machine(1, hostname="db-1.lab.example", status="unreachable"),
        build_machine(2, hostname="web-1.lab.example"),
    ])
    db, web = (Machine.objects.get(hostname=name) for name in ("db-1.lab.example", "web-1.lab.example"))
    watching = log_in(new_context(), server, errors)  # another operator's dashboard, left open
    page = log_in(new_context(), server, errors)
    mark = f"#machine-{db.pk} .silenced-mark"
    expect(page.locator(mark)).to_have_count(0)

    page.get_by_role("link", name="Silences").click()
    expect(page.get_by_role("heading", name="Silences", exact=True)).to_be_visible()
    expect(page.locator("#no-silences")).to_be_visible()
    page.get_by_label("One machine").check()
    page.get_by_label("Machine", exact=True).fill("db-1.lab.example")
    page.get_by_label("For").select_option(label="2 hours")
    page.get_by_label("Reason").fill("disk swap, CHG-1234")
    page.get_by_role("button", name="Silence alerts").click()

    expect(page.locator(".banner-success")).to_have_text(f"Alerts are silenced for db-1.lab.example ({db.ip_address}).")
    silence = Silence.objects.get()
    assert silence.machine_id == db.pk and silence.created_by == USERNAME
    row = page.locator(f"#silence-{silence.pk}")
    expect(row).to_contain_text("disk swap, CHG-1234")
    until = timezone.localtime(silence.ends_at)
    expect(row).to_contain_text(f"{until:%Y-%m-%d %H:%M}")

    # The open dashboard marks the machine at once; the other machine is not marked.
    expect(watching.locator(mark)).to_have_count(1)
    title = f"Alerts silenced until {until:%Y-%m-%d %H:%M} {until.tzname()}"
    expect(watching.locator(mark)).to_have_attribute("title", title)
    expect(watching.locator(f"#machine-{web.pk} .silenced-mark")).to_have_count(0)
    # A dashboard loaded now shows it too.
    page.get_by_role("link", name="Machines").first.click()
    expect(page.locator(mark)).to_be_visible()

    page.goto(f"{server.url}/silences")
    page.locator(f"#silence-{silence.pk}").get_by_role("button", name="End now").click()
    expect(page.locator(".banner-success")).to_contain_text("The silence for db-1.lab.example")
    expect(page.locator("#no-silences")).to_be_visible()
    expect(page.locator("#ended-silences")).to_contain_text("disk swap, CHG-1234")
    assert Silence.objects.get().ends_at <= timezone.now()
    expect(watching.locator(mark)).to_have_count(0)
    errors.assert_none()


def test_a_viewer_sees_silences_without_forms(server, new_context, errors, user, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password=PASSWORD)
    viewer.groups.add(Group.objects.get(name="viewer"))
    Silence.objects.create(ends_at=timezone.now() + timezone.timedelta(hours=1), reason="network move")
    page = log_in(new_context(), server, errors, path="/silences", live=False, username="viewer")
    expect(page.locator("#active-silences")).to_contain_text("Every machine")
    expect(page.locator("#active-silences")).to_contain_text("network move")
    expect(page.locator("#silence-form")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("End now|Extend"))).to_have_count(0)
    errors.assert_none()
