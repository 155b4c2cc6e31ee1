"""The dashboard's Silences page (operators create, extend and end; viewers look), the silenced marks on the
dashboard's rows and the banner about alerts that could not be delivered."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.template import Context, Template
from django.test import Client
from django.utils import timezone

from machines.models import Machine
from monitoring.alerts import silences
from monitoring.models import AlertKind, Channel, Notification, Silence

pytestmark = pytest.mark.django_db

PAGE = "/silences"


def _silence(ends_in=timedelta(hours=1), **fields) -> Silence:
    return Silence.objects.create(ends_at=timezone.now() + ends_in, reason=fields.pop("reason", "maintenance"),
                                  **fields)


def _create(client, **fields):
    data = {"scope": "machine", "machine": "", "vni": "", "duration": "3600", "until": "", "reason": "patching"}
    return client.post(PAGE, data | fields)


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


class TestAccess:
    def test_signing_in_is_required(self, client):
        response = client.get(PAGE)
        assert response.status_code == 302 and response["Location"].startswith("/login/")

    def test_a_viewer_sees_silences_but_cannot_change_them(self, viewer_client, make_machine):
        silence = _silence(machine=make_machine(hostname="db-1"), reason="disk swap")
        page = viewer_client.get(PAGE).content.decode()
        assert "db-1" in page and "disk swap" in page
        assert 'id="silence-form"' not in page and "End now" not in page
        assert _create(viewer_client, scope="everything").status_code == 403
        assert viewer_client.post(f"{PAGE}/{silence.pk}/extend", {"by": "3600"}).status_code == 403
        assert viewer_client.post(f"{PAGE}/{silence.pk}/end").status_code == 403
        assert Silence.objects.get().ends_at == silence.ends_at

    def test_the_dashboard_links_to_the_page(self, operator_client):
        assert 'href="/silences"' in operator_client.get("/").content.decode()


class TestCreate:
    def test_an_operator_silences_a_machine_by_its_host_name(self, operator_client, make_machine):
        machine = make_machine(hostname="web-7")
        before = timezone.now()
        response = _create(operator_client, machine="WEB-7", duration="7200", reason="kernel update")
        assert response.status_code == 302 and response["Location"] == PAGE
        silence = Silence.objects.get()
        assert (silence.machine_id, silence.vni, silence.reason, silence.created_by) == (
            machine.pk, None, "kernel update", "operator")
        assert before + timedelta(hours=2) <= silence.ends_at <= timezone.now() + timedelta(hours=2)
        page = operator_client.get(PAGE)
        assert _messages(page) == [f"Alerts are silenced for web-7 ({machine.ip_address})."]
        assert f'id="silence-{silence.pk}"' in page.content.decode()

    def test_by_address_a_vni_or_everything(self, operator_client, make_machine):
        machine = make_machine(ip_address="10.9.9.9")
        assert _create(operator_client, machine=" 10.9.9.9 ").status_code == 302
        assert _create(operator_client, scope="vni", vni="4242", machine="ignored").status_code == 302
        assert _create(operator_client, scope="everything").status_code == 302
        assert list(Silence.objects.order_by("pk").values_list("machine_id", "vni")) == [
            (machine.pk, None), (None, 4242), (None, None)]

    def test_until_overrides_the_duration(self, operator_client):
        until = timezone.localtime() + timedelta(days=2)
        response = _create(operator_client, scope="everything", until=until.strftime("%Y-%m-%dT%H:%M"))
        assert response.status_code == 302
        assert Silence.objects.get().ends_at == until.replace(second=0, microsecond=0)

    @pytest.mark.parametrize(
        ("fields", "field", "message"),
        [
            ({"machine": ""}, "machine", "Give the machine&#x27;s host name or IP address."),
            ({"machine": "nobody"}, "machine", "No machine has this host name or IP address."),
            ({"machine": "twin"}, "machine", "Several machines are called twin"),
            ({"scope": "vni"}, "vni", "Give the VNI to silence."),
            ({"scope": "vni", "vni": "16777216"}, "vni", "16777215"),
            ({"scope": "everything", "until": "2001-01-01T00:00"}, "until", "Must be in the future."),
            ({"scope": "everything", "until": "2999-01-01T00:00"}, "until", "At most 90 days from now."),
            ({"scope": "everything", "reason": "  "}, "reason", "This field is required."),
            ({"scope": "everything", "duration": "5"}, "duration", "Select a valid choice."),
            ({"scope": "nothing"}, "scope", "Select a valid choice."),
        ],
    )
    def test_mistakes_are_shown_in_the_form(self, operator_client, make_machine, fields, field, message):
        make_machine(hostname="twin")
        make_machine(hostname="twin")
        response = _create(operator_client, **fields)
        assert response.status_code == 400
        assert field in response.context["form"].errors
        html = response.content.decode()
        assert message in html
        assert "The silence was not created" in html
        assert not Silence.objects.exists()

    def test_the_machine_page_link_fills_in_the_machine(self, operator_client, make_machine):
        machine = make_machine(hostname="edge-3")
        form = operator_client.get(f"{PAGE}?machine={machine.pk}").context["form"]
        assert form.initial == {"scope": "machine", "machine": "edge-3"}
        make_machine(hostname="edge-3")
        form = operator_client.get(f"{PAGE}?machine={machine.pk}").context["form"]
        assert form.initial["machine"] == machine.ip_address
        assert operator_client.get(f"{PAGE}?machine=x").context["form"].initial == {}

    def test_open_dashboards_are_told(self, operator_client, make_machine, monkeypatch,
                                      django_capture_on_commit_callbacks):
        sent = []
        monkeypatch.setattr("monitoring.broadcast._send_now", sent.append)
        machine = make_machine()
        with django_capture_on_commit_callbacks(execute=True):
            _create(operator_client, machine=machine.hostname)
            _create(operator_client, scope="everything")
        assert sent[0]["changed"] == [machine.pk] and not sent[0]["created"]
        # A VNI or everything: each dashboard reloads its list.
        assert sent[1]["changed"] == [] and sent[1]["created"]


class TestExtendAndEnd:
    def test_extend(self, operator_client):
        silence = _silence()
        response = operator_client.post(f"{PAGE}/{silence.pk}/extend", {"by": "86400"}, follow=True)
        assert _messages(response) == ["The silence for every machine was extended."]
        assert Silence.objects.get().ends_at == silence.ends_at + timedelta(days=1)

    @pytest.mark.parametrize(
        ("ends_in", "by", "message"),
        [
            (timedelta(hours=1), "5", "Choose how long to extend the silence by."),
            (timedelta(days=89, hours=23), "604800", "cannot end then: At most 90 days from now."),
            (timedelta(minutes=-1), "3600", "has ended already."),
        ],
    )
    def test_extend_refusals(self, operator_client, ends_in, by, message):
        silence = _silence(ends_in)
        response = operator_client.post(f"{PAGE}/{silence.pk}/extend", {"by": by}, follow=True)
        [shown] = _messages(response)
        assert message in shown
        assert Silence.objects.get().ends_at == silence.ends_at

    def test_end_now(self, operator_client, make_machine):
        silence = _silence(vni=5)
        response = operator_client.post(f"{PAGE}/{silence.pk}/end", follow=True)
        assert _messages(response) == [
            "The silence for VNI 5 has ended; machines still unreachable will be announced."]
        ended = Silence.objects.get()
        assert ended.ends_at <= timezone.now() and ended.concluded_at is None
        html = response.content.decode()
        assert "Nothing is silenced" in html and 'id="ended-silences"' in html
        assert operator_client.get(f"{PAGE}/{silence.pk}/end").status_code == 405
        assert operator_client.post(f"{PAGE}/999999/end").status_code == 404


class TestDashboardMarks:
    TEMPLATE = Template(
        "{% load alert_tags %}{% silenced_machines machines as silenced %}"
        "{% for machine in machines %}[{{ machine.pk }}{{ machine|silence_mark:silenced }}]{% endfor %}"
    )

    def _render(self, machines) -> str:
        return self.TEMPLATE.render(Context({"machines": machines}))

    def test_silenced_machines_are_marked_for_one_query(self, make_machine, django_assert_num_queries):
        machines = [make_machine(vni=100 + n % 3) for n in range(30)]
        _silence(timedelta(hours=3), machine=machines[0])
        _silence(timedelta(hours=1), vni=101)
        _silence(timedelta(hours=-1), vni=102)  # over
        with django_assert_num_queries(1):
            html = self._render(machines)
        marked = {machine.pk for machine in machines if f"[{machine.pk} <span" in html}
        assert marked == {machines[0].pk} | {m.pk for m in machines if m.vni == 101}
        assert 'title="Alerts silenced until ' in html and "🔕" in html
        with django_assert_num_queries(0):
            assert self._render([]) == ""

    def test_everything_marks_every_machine_with_the_latest_end(self, make_machine):
        machine = make_machine()
        _silence(timedelta(hours=1))
        later = _silence(timedelta(hours=5), machine=machine)
        local = timezone.localtime(later.ends_at)
        assert f"Alerts silenced until {local:%Y-%m-%d %H:%M}" in self._render([machine])
        assert silences.covering(list(Silence.objects.all()), [machine]) == {machine.pk: later.ends_at}


class TestFailedAlertsBanner:
    TEMPLATE = Template("{% load alert_tags %}{% alerts_banner %}")

    def _failed(self, n: int, ago=timedelta(hours=1)):
        channel = Channel.objects.create(name="ops", url="json://127.0.0.1:9/")
        for _ in range(n):
            Notification.objects.create(channel=channel, kind=AlertKind.UNREACHABLE, state=Notification.State.FAILED,
                                        next_attempt_at=timezone.now() - ago)

    def _render(self, user) -> str:
        cache.clear()
        return self.TEMPLATE.render(Context({"user": user}))

    def test_nothing_when_everything_was_delivered(self, operator, django_assert_num_queries):
        with django_assert_num_queries(1):
            assert self._render(operator) == ""
        # The count is shared for a few seconds: the next pages cost no query.
        with django_assert_num_queries(0):
            self.TEMPLATE.render(Context({"user": operator}))

    def test_failed_alerts_are_counted_and_staff_get_a_link(self, operator, admin_user):
        self._failed(3)
        self._failed(2, ago=timedelta(days=8))  # given up long ago: no longer news
        html = self._render(operator)
        assert "3 alerts could not be delivered in the last 7 days." in html and "/admin/" not in html
        html = self._render(admin_user)
        assert 'href="/admin/monitoring/notification/?state__exact=failed"' in html

    def test_the_dashboard_shows_it(self, operator_client):
        self._failed(1)
        cache.clear()
        page = operator_client.get("/").content.decode()
        assert "1 alert could not be delivered in the last 7 days." in page


def test_silencing_the_machine_still_changes_its_state(make_machine):
    # A silence stops alerts, nothing else: the monitor's records are the monitor's tests' business; here only
    # that the page's silence does not touch the machine.
    machine = make_machine(status=Machine.Status.ACTIVE)
    silences.create(machine=machine, ends_at=timezone.now() + timedelta(hours=1), reason="r", by="x")
    machine.refresh_from_db()
    assert machine.status == Machine.Status.ACTIVE


def test_the_machine_page_shows_its_silence_and_links_operators_to_the_form(operator_client, make_machine,
                                                                             django_user_model):
    machine = make_machine(vni=12)
    page = operator_client.get(f"/machines/{machine.pk}").content.decode()
    assert f'href="/silences?machine={machine.pk}"' in page and 'id="machine-silence"' not in page
    silence = _silence(timedelta(hours=2), vni=12)
    page = operator_client.get(f"/machines/{machine.pk}").content.decode()
    local = timezone.localtime(silence.ends_at)
    assert f"Silenced until {local:%Y-%m-%d %H:%M}" in page
    viewer = django_user_model.objects.create_user("viewer-2")
    viewer.groups.add(Group.objects.get(name="viewer"))
    other = Client()
    other.force_login(viewer)
    page = other.get(f"/machines/{machine.pk}").content.decode()
    assert 'id="machine-silence"' in page and "/silences?machine=" not in page
