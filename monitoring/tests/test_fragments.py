"""What a monitor event pushes to a dashboard: the page's own row once per changed machine; and dashboards showing the
same page share one render of it, everything else renders alone."""

import re

import pytest
from django.utils import translation

from machines.models import Machine
from monitoring import broadcast, fragments
from monitoring.fragments import View, render_for
from monitoring.monitor import change_event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    fragments._shared.clear()
    yield
    fragments._shared.clear()


@pytest.fixture
def machine(make_machine):
    return make_machine(hostname="shared-1", status=Machine.Status.UNREACHABLE)


def test_one_render_for_every_socket_with_the_same_view_and_language(machine, django_assert_num_queries):
    event = {**broadcast.event(changed=[machine.pk], announce={machine.pk: "unreachable"}), "id": "e1"}
    view = View(visible=frozenset([machine.pk]))
    first = render_for(event, view, "en")
    assert f'id="machine-{machine.pk}"' in first and "shared-1 is now Unreachable." in first
    with django_assert_num_queries(0):
        assert render_for(dict(event), View(visible=frozenset([machine.pk])), "en") == first
    japanese = render_for(event, view, "ja")
    assert japanese != first and "到達不能" in japanese
    other_page = render_for(event, View(visible=frozenset([machine.pk]), page=2), "en")
    assert other_page is not first


def test_events_without_an_id_and_new_events_render_again(machine, django_assert_max_num_queries):
    view = View(visible=frozenset([machine.pk]))
    # Every event made by broadcast.event() has an id; one without (from an older process) is never shared.
    plain = {key: value for key, value in broadcast.event(changed=[machine.pk]).items() if key != "id"}
    render_for(plain, view, "en")
    Machine.objects.filter(pk=machine.pk).update(hostname="renamed-1")
    assert "renamed-1" in render_for(plain, view, "en")  # no id: never shared
    event = {**plain, "id": "e2"}
    assert "renamed-1" in render_for(event, view, "en")
    Machine.objects.filter(pk=machine.pk).update(hostname="renamed-2")
    assert "renamed-2" in render_for({**plain, "id": "e3"}, view, "en")  # a later event is a new render


def test_the_shared_renders_are_bounded(machine, monkeypatch):
    monkeypatch.setattr(fragments, "SHARED_RENDERS", 3)
    view = View(visible=frozenset([machine.pk]))
    for i in range(10):
        render_for({**broadcast.event(changed=[machine.pk]), "id": f"e{i}"}, view, "en")
    assert len(fragments._shared) == 3


def test_a_monitor_event_names_the_machines_and_their_new_status(machine):
    from monitoring.checks import StatusChange
    from monitoring.rules import Decision, State

    state = State(status="active", failures=0, interval=60, unreachable_since=None)
    changes = [StatusChange(machine, "unreachable", Decision(state=state, next_delay=60, event="recovered"))]
    first = change_event(changes)
    assert first["changed"] == [machine.pk] and first["announce"] == {str(machine.pk): "active"}
    with translation.override("en"):
        assert first["type"] == "machines.changed"


def test_a_changed_machine_is_pushed_once_as_the_pages_own_row(machine):
    """One element per machine, swapped in by its id: no second (phone) markup, no per-element swap attribute."""
    from django.template.loader import render_to_string

    event = {**broadcast.event(changed=[machine.pk], announce={machine.pk: "unreachable"}), "id": "row"}
    html = render_for(event, View(visible=frozenset([machine.pk])), "en")
    assert html.count(f'id="machine-{machine.pk}"') == 1 and "machine-card" not in html
    row = re.search(rf'<tr id="machine-{machine.pk}" class="machine-row row-unreachable flash">.*?</tr>', html).group()
    page_row = render_to_string("machines/_rows.html", {"machines": [machine], "flash": True}).strip()
    assert row == page_row  # the very markup the page renders
    # The ws extension swaps every top-level element by its id; only the announcer says how (its content).
    assert re.findall(r'hx-swap-oob="([^"]*)"', html) == ["innerHTML"]
    # One markup, not a row and a card: the row alone stays well under what the two took together.
    assert len(row.encode()) < 700, len(row.encode())


def test_a_deleted_machine_is_removed_by_its_one_id(machine):
    pk = machine.pk
    machine.delete()
    html = render_for({"changed": [pk], "id": "gone"}, View(visible=frozenset([pk])), "en")
    assert f'<tr id="machine-{pk}" hx-swap-oob="delete"></tr>' in html and html.count(f'id="machine-{pk}"') == 1
