"""A grouped alert names a VTEP whose every host had the same event, instead of listing those hosts.

Notifications come from the real write path (a claim, then record_checks) and are read back the way the
delivery worker claims them, with each one's machine loaded.
"""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from machines.models import Machine
from monitoring import checks
from monitoring.alerts import messages
from monitoring.models import Channel, Notification
from monitoring.rules import Outcome

DOWN = Outcome(ok=False, failure="timeout")
UP = Outcome(ok=True, rtt_ms=1.5)
VTEP = "192.0.2.5"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _one_failure_is_unreachable(settings):
    settings.FAILURE_THRESHOLD = 1
    settings.BASE_URL = ""
    settings.TIME_ZONE = "UTC"


@pytest.fixture
def channel() -> Channel:
    return Channel.objects.create(name="ops", url="json://localhost")


@pytest.fixture
def host(make_machine):
    """An active machine that no check claims until `change` does."""

    def make(name: str, vtep: str | None = None, vni: int | None = 100) -> Machine:
        number = Machine.objects.count() + 1
        return make_machine(
            hostname=name, ip_address=f"10.1.{number // 250}.{number % 250 + 1}", vni=vni, vtep=vtep, mtu=1450,
            status="active", last_seen_at=timezone.now(), next_check_at=timezone.now() + timedelta(days=1),
        )

    return make


def change(*machines: Machine, outcome: Outcome = DOWN) -> None:
    """Check these machines now with this outcome, as the monitor does: claim, then record."""
    ids = [machine.pk for machine in machines]
    Machine.objects.filter(pk__in=ids).update(next_check_at=timezone.now())
    token = uuid.uuid4().hex
    assert {machine.pk for machine in checks.claim_due(token, 1000, timedelta(seconds=30))} == set(ids)
    checks.record_checks(token, [checks.CheckRecord(pk, outcome) for pk in ids])


def claimed(channel: Channel) -> list[Notification]:
    """The channel's pending notifications as the delivery worker reads them, each with its machine."""
    return list(
        Notification.objects.filter(channel=channel, state=Notification.State.PENDING)
        .select_related("channel", "machine").order_by("occurred_at", "pk")
    )


def render(channel: Channel, django_assert_num_queries, language: str = "en") -> messages.Message:
    alerts = claimed(channel)
    with django_assert_num_queries(1):  # the VTEPs' machines, counted on the worker's database thread
        hosts = messages.vtep_hosts(alerts)
    channel.language = language
    with django_assert_num_queries(0):  # on a sender thread: no database
        return messages.render(channel, alerts, hosts)


def test_the_vtep_is_named_once_instead_of_each_of_its_hosts(channel, host, django_assert_num_queries):
    behind = [host(f"vm-{n:02d}", VTEP) for n in range(12)]
    alone = host("solo", "192.0.2.9")  # one host behind its VTEP is named itself
    half = [host("half-a", "192.0.2.7"), host("half-b", "192.0.2.7")]
    plain = host("no-vtep")
    change(*behind, alone, half[0], plain)

    message = render(channel, django_assert_num_queries)

    assert message.title == (
        "[vxlanmgr] 15 machines became unreachable (including all hosts behind VTEP 192.0.2.5)"
    )
    lines = message.body.splitlines()
    assert lines[0] == "15 machines became unreachable"
    vtep_lines = [line for line in lines if "VTEP" in line]
    assert len(vtep_lines) == 1
    assert vtep_lines[0].startswith("- all 12 hosts behind VTEP 192.0.2.5, VNI 100: Became unreachable at ")
    assert not any("vm-" in line for line in lines)
    for machine in (alone, half[0], plain):
        assert f"- {machine.hostname} ({machine.ip_address}), VNI 100: Became unreachable at " in message.body
    assert "half-b" not in message.body and "more" not in message.body


def test_a_vtep_with_a_host_that_did_not_fail_is_not_named(channel, host, django_assert_num_queries):
    behind = [host(f"vm-{n}", VTEP) for n in range(4)]
    change(*behind[:3])  # the fourth host behind the VTEP still answers
    message = render(channel, django_assert_num_queries)
    assert "VTEP" not in message.title + message.body
    assert all(machine.hostname in message.body for machine in behind[:3])


def test_hosts_of_one_vtep_with_different_events_are_listed(channel, host, django_assert_num_queries):
    behind = [host(f"vm-{n}", VTEP) for n in range(3)]
    change(behind[0])
    Notification.objects.update(state=Notification.State.SENT)  # announced earlier, on its own
    change(*behind[1:])
    change(behind[0], outcome=UP)  # meanwhile the first one recovers: the VTEP's hosts share no one event
    message = render(channel, django_assert_num_queries)
    assert message.title == "[vxlanmgr] 2 machines became unreachable, 1 machine recovered"
    assert "VTEP" not in message.body
    assert all(machine.hostname in message.body for machine in behind)


def test_a_vtep_that_failed_and_came_back_is_named_for_each_event(channel, host, django_assert_num_queries):
    behind = [host(f"vm-{n}", VTEP, vni=100 + n % 2) for n in range(3)]
    change(*behind)
    change(*behind, outcome=UP)
    message = render(channel, django_assert_num_queries)
    body = message.body
    assert "- all 3 hosts behind VTEP 192.0.2.5, VNI 100, 101: Became unreachable at " in body
    assert "- all 3 hosts behind VTEP 192.0.2.5, VNI 100, 101: Recovered at " in body
    assert "vm-" not in body


def test_many_vteps_are_counted_past_the_first_twenty(channel, host, django_assert_num_queries):
    pairs = [host(f"vm-{n:02d}", f"198.51.100.{n // 2 + 1}") for n in range(50)]  # 25 VTEPs of two hosts
    others = [host(f"other-{n:02d}") for n in range(23)]
    change(*pairs, *others)
    message = render(channel, django_assert_num_queries)
    lines = message.body.splitlines()
    assert len([line for line in lines if line.startswith("- all 2 hosts behind VTEP ")]) == messages.GROUP_NAMED
    assert "and 5 more VTEPs" in lines
    assert len([line for line in lines if line.startswith("- other-")]) == messages.GROUP_NAMED
    assert "and 3 more" in lines
    # The title names the first three.
    named = message.title.partition("(including all hosts behind VTEP ")[2]
    assert named.endswith(", …)") and len(named.split(", ")) == 4


def test_without_the_vtep_count_every_host_is_listed(channel, host):
    behind = [host(f"vm-{n}", VTEP) for n in range(3)]
    change(*behind)
    message = messages.render(channel, claimed(channel))
    assert "VTEP" not in message.body
    assert all(machine.hostname in message.body for machine in behind)


def test_notifications_without_their_machine_loaded_cost_no_queries(channel, host, django_assert_num_queries):
    change(*[host(f"vm-{n}", VTEP) for n in range(3)])
    alerts = list(Notification.objects.filter(channel=channel).select_related("channel"))
    with django_assert_num_queries(0):
        assert messages.vtep_hosts(alerts) == {}


def test_it_is_said_in_the_channels_language(channel, host, django_assert_num_queries):
    change(*[host(f"vm-{n}", VTEP) for n in range(3)])
    message = render(channel, django_assert_num_queries, language="ja")
    assert message.title.endswith("（VTEP 192.0.2.5 配下の全ホストを含む）")
    assert "- VTEP 192.0.2.5 配下の全3台、VNI 100: " in message.body
    assert "vm-" not in message.body and "Became unreachable" not in message.body
