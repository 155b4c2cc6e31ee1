"""What a push brings a dashboard filtered by VNI: its per-VNI counts, and a refresh only for its VNI's changes."""

import pytest

from machines.models import Machine
from monitoring.fragments import View, render_push

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(make_machine):
    make_machine(hostname="a-web", vni=100, status="active")
    make_machine(hostname="a-db", vni=100, status="unreachable")
    make_machine(hostname="b-web", vni=200, status="active")
    make_machine(hostname="b-db", vni=200, status="active")


def test_the_push_carries_the_vni_counts_and_marks_the_pages_vni(fleet):
    machine = Machine.objects.get(hostname="b-web")
    shown = frozenset({"100", "200"})  # what the page's per-VNI line shows, as its live-view form says
    html = render_push({"changed": [machine.pk]}, View(visible=frozenset([machine.pk]), vni="200", vnis=shown))
    assert f'id="machine-{machine.pk}"' in html
    # Only the changed machine's VNI, swapped in place by its id: the push stays about one row's size.
    assert '<span id="vni-200" class="vni-count-selected" aria-current="true">VNI 200: 2 machines' in html
    assert 'id="vni-summary"' not in html and "VNI 100" not in html


def test_a_push_after_machines_came_or_went_carries_the_whole_vni_line(fleet):
    gone = Machine.objects.get(hostname="b-web")
    html = render_push({"deleted": [gone.pk], "changed": []}, View(visible=frozenset([gone.pk])))
    assert '<p id="vni-summary" class="vni-summary">' in html and "VNI 100: 2 machines" in html


def test_a_machine_without_a_vni_is_counted_under_no_vni(fleet, make_machine):
    loner = make_machine(hostname="loner", vni=None, status="unreachable")
    view = View(visible=frozenset([loner.pk]), vnis=frozenset({"100", "200", "none"}))
    html = render_push({"changed": [loner.pk]}, view)
    assert '<span id="vni-none">No VNI: 1 machine' in html


def test_a_change_elsewhere_refreshes_only_pages_of_its_vni(fleet):
    shown = Machine.objects.get(hostname="a-web")
    moved = Machine.objects.get(hostname="b-db")
    Machine.objects.filter(pk=moved.pk).update(status="unreachable")
    event = {"changed": [moved.pk]}
    assert 'data-refresh="true"' in render_push(event, View(visible=frozenset([shown.pk])))
    assert 'data-refresh="true"' not in render_push(event, View(visible=frozenset([shown.pk]), vni="100"))
    assert 'data-refresh="true"' in render_push(event, View(visible=frozenset([shown.pk]), vni="200"))


def test_a_page_whose_vni_line_is_out_of_date_gets_the_whole_line(fleet):
    machine = Machine.objects.get(hostname="b-web")
    html = render_push({"changed": [machine.pk]}, View(visible=frozenset([machine.pk]), vnis=frozenset({"100"})))
    assert '<p id="vni-summary" class="vni-summary">' in html and "VNI 200: 2 machines" in html
