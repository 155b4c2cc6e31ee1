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
    html = render_push({"changed": [machine.pk]}, View(visible=frozenset([machine.pk]), vni="200"))
    assert f'id="machine-{machine.pk}"' in html
    assert '<p id="vni-summary" class="vni-summary">' in html
    assert 'aria-current="true">VNI 200: 2 machines</span>' in html


def test_a_change_elsewhere_refreshes_only_pages_of_its_vni(fleet):
    shown = Machine.objects.get(hostname="a-web")
    moved = Machine.objects.get(hostname="b-db")
    Machine.objects.filter(pk=moved.pk).update(status="unreachable")
    event = {"changed": [moved.pk]}
    assert 'data-refresh="true"' in render_push(event, View(visible=frozenset([shown.pk])))
    assert 'data-refresh="true"' not in render_push(event, View(visible=frozenset([shown.pk]), vni="100"))
    assert 'data-refresh="true"' in render_push(event, View(visible=frozenset([shown.pk]), vni="200"))
