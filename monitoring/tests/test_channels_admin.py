"""Alert channels in the admin (the URL is a secret: typed once, then shown as its scheme only), the test message
against a real receiver, the read-only outbox, and the channels seeded from VXLANMGR_NOTIFY_URLS."""

import re

import pytest
from django.core.management import call_command
from django.db import DatabaseError
from django.utils import timezone

from monitoring.alerts import channels as seeding
from monitoring.models import AlertKind, Channel, Notification, Silence
from tests.support.net import wait_for
from tests.support.processes import Server, process_env, running_monitor
from tests.support.receivers import HttpReceiver

pytestmark = pytest.mark.django_db

ADD = "/admin/monitoring/channel/add/"
CHANGELIST = "/admin/monitoring/channel/"
SECRET = "s3cretpassw0rd"


def _form(**fields) -> dict:
    return {"name": "ops", "url": "", "enabled": "on", "vnis": "", "language": "en"} | fields


def _change_url(channel: Channel) -> str:
    return f"/admin/monitoring/channel/{channel.pk}/change/"


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def receiver():
    with HttpReceiver() as running:
        yield running


class TestChannelForm:
    def test_the_url_is_stored_and_never_shown_again(self, admin_client):
        url = f"json://alerts:{SECRET}@127.0.0.1:9/hook"
        response = admin_client.post(ADD, _form(url=url, events=["unreachable", "recovered"], vnis="200, 100,100"))
        assert response.status_code == 302, response.content
        channel = Channel.objects.get()
        assert channel.url == url
        assert channel.events == ["unreachable", "recovered"] and channel.vnis == [100, 200]
        for page in (admin_client.get(CHANGELIST), admin_client.get(_change_url(channel))):
            html = page.content.decode()
            assert SECRET not in html and "127.0.0.1:9" not in html
            assert "json://••••" in html

    def test_saving_without_typing_a_url_keeps_the_stored_one(self, admin_client):
        channel = Channel.objects.create(name="ops", url=f"json://u:{SECRET}@127.0.0.1:9/")
        response = admin_client.post(_change_url(channel), _form(name="renamed", language="ja"))
        assert response.status_code == 302, response.content
        channel.refresh_from_db()
        assert (channel.name, channel.language, channel.url) == ("renamed", "ja", f"json://u:{SECRET}@127.0.0.1:9/")
        admin_client.post(_change_url(channel), _form(url="jsons://example.com/other"))
        channel.refresh_from_db()
        assert channel.url == "jsons://example.com/other"

    @pytest.mark.parametrize("url", [f"nosuchservice://{SECRET}@host/x", f"not a url {SECRET}", f"json:/{SECRET}"])
    def test_a_url_apprise_cannot_use_is_refused_without_echoing_it(self, admin_client, url):
        response = admin_client.post(ADD, _form(url=url))
        assert response.status_code == 200
        html = response.content.decode()
        assert "Apprise cannot use this URL" in html
        assert SECRET not in html
        assert not Channel.objects.exists()

    def test_a_new_channel_needs_a_url(self, admin_client):
        response = admin_client.post(ADD, _form())
        assert "An Apprise URL is required." in response.content.decode()
        assert not Channel.objects.exists()

    @pytest.mark.parametrize("vnis", ["abc", "16777216", "-1", "1.5"])
    def test_bad_vnis_are_refused(self, admin_client, vnis):
        response = admin_client.post(ADD, _form(url="json://127.0.0.1:9/", vnis=vnis))
        assert response.status_code == 200
        assert "is not a VNI" in response.content.decode()
        assert not Channel.objects.exists()

    def test_the_admin_is_for_staff_only(self, viewer_client):
        response = viewer_client.get(CHANGELIST)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


class TestTestMessage:
    def test_the_action_sends_and_says_so_on_the_page(self, admin_client, receiver):
        channel = Channel.objects.create(name="ops webhook", url=receiver.url("/hook"))
        response = admin_client.post(
            CHANGELIST, {"action": "send_test_messages", "_selected_action": [channel.pk]}, follow=True,
        )
        assert _messages(response) == ["Test message sent to “ops webhook”."]
        [message] = receiver.messages("/hook")
        assert message["title"] == "[vxlanmgr] Test message"
        assert message["message"].startswith("This is a test of the alert channel “ops webhook”, sent by admin")

    def test_the_button_on_the_change_page(self, admin_client, receiver):
        channel = Channel.objects.create(name="ops", url=receiver.url("/button"))
        page = admin_client.get(_change_url(channel)).content.decode()
        assert f'action="/admin/monitoring/channel/{channel.pk}/test/"' in page
        response = admin_client.post(f"/admin/monitoring/channel/{channel.pk}/test/", follow=True)
        assert response.redirect_chain[-1][0] == _change_url(channel)
        assert _messages(response) == ["Test message sent to “ops”."]
        assert len(receiver.received("/button")) == 1
        assert admin_client.get(f"/admin/monitoring/channel/{channel.pk}/test/").status_code == 405
        assert admin_client.post("/admin/monitoring/channel/999999/test/").status_code == 404

    def test_a_failure_shows_the_reason_without_the_credentials(self, admin_client, receiver):
        receiver.status = 500
        channel = Channel.objects.create(name="ops", url=f"json://alerts:{SECRET}@127.0.0.1:{receiver.port}/x")
        response = admin_client.post(f"/admin/monitoring/channel/{channel.pk}/test/", follow=True)
        [message] = _messages(response)
        assert message.startswith("The test message to “ops” could not be sent: ")
        assert SECRET not in response.content.decode()
        assert len(receiver.received("/x")) == 1

    def test_a_receiver_that_is_down(self, admin_client, receiver):
        channel = Channel.objects.create(name="ops", url=receiver.url("/x"))
        receiver.stop()
        response = admin_client.post(
            CHANGELIST, {"action": "send_test_messages", "_selected_action": [channel.pk]}, follow=True,
        )
        [message] = _messages(response)
        assert "could not be sent" in message


class TestSeededChannels:
    def test_a_seeded_channel_keeps_its_url_and_name_but_may_be_switched_off(self, admin_client, settings):
        settings.NOTIFY_URLS = [f"json://u:{SECRET}@127.0.0.1:9/seeded"]
        seeding.seed_environment_channels()
        channel = Channel.objects.get()
        page = admin_client.get(_change_url(channel)).content.decode()
        assert SECRET not in page and 'name="url"' not in page and 'name="name"' not in page
        assert "json://••••" in page and "VXLANMGR_NOTIFY_URLS #1 (json)" in page
        response = admin_client.post(_change_url(channel), {"vnis": "5", "language": "en", "events": ["deleted"]})
        assert response.status_code == 302, response.content
        channel.refresh_from_db()
        assert (channel.enabled, channel.vnis, channel.events) == (False, [5], ["deleted"])
        assert channel.url == f"json://u:{SECRET}@127.0.0.1:9/seeded"
        assert admin_client.get(f"/admin/monitoring/channel/{channel.pk}/delete/").status_code == 403
        # Seeding again leaves what the admin set alone.
        seeding.seed_environment_channels()
        channel.refresh_from_db()
        assert (channel.enabled, channel.vnis) == (False, [5])


class TestOutboxAdmin:
    def test_the_alerts_are_listed_read_only_failed_ones_marked(self, admin_client):
        channel = Channel.objects.create(name="ops", url="json://127.0.0.1:9/")
        Notification.objects.create(channel=channel, kind=AlertKind.UNREACHABLE, hostname="web-1",
                                    ip_address="10.0.0.1", state=Notification.State.FAILED, attempts=9,
                                    last_error="HTTP 500")
        Notification.objects.create(channel=channel, kind=AlertKind.RECOVERED, hostname="web-2",
                                    state=Notification.State.SENT, sent_at=timezone.now())
        page = admin_client.get("/admin/monitoring/notification/").content.decode()
        assert "web-1 (10.0.0.1)" in page and "web-2" in page and "✖ Could not be delivered" in page
        failed = admin_client.get("/admin/monitoring/notification/?state__exact=failed").content.decode()
        assert "web-1" in failed and "web-2" not in failed
        assert admin_client.get("/admin/monitoring/notification/add/").status_code == 403
        assert admin_client.get("/admin/monitoring/silence/").status_code == 200


def _seeded() -> list[tuple[int, str, str, str]]:
    return list(Channel.objects.exclude(from_environment="").order_by("from_environment")
                .values_list("pk", "from_environment", "name", "url"))


class TestSeeding:
    A, B, C = "json://127.0.0.1:9/a", "mailto://user:pw@example.com?to=ops@example.com", "slack://T1/B2/C3"

    def test_each_url_becomes_a_channel(self, settings):
        settings.NOTIFY_URLS = [self.A, self.B, self.A]
        assert seeding.seed_environment_channels() == {"created": 2, "updated": 0, "deleted": 0}
        assert [row[1:] for row in _seeded()] == [
            ("VXLANMGR_NOTIFY_URLS#1", "VXLANMGR_NOTIFY_URLS #1 (json)", self.A),
            ("VXLANMGR_NOTIFY_URLS#2", "VXLANMGR_NOTIFY_URLS #2 (mailto)", self.B),
        ]

    def test_nothing_changed_costs_one_read(self, settings, django_assert_num_queries):
        settings.NOTIFY_URLS = [self.A, self.B]
        seeding.seed_environment_channels()
        with django_assert_num_queries(1):
            assert seeding.seed_environment_channels() == {"created": 0, "updated": 0, "deleted": 0}

    def test_a_changed_url_updates_its_channel(self, settings):
        settings.NOTIFY_URLS = [self.A, self.B]
        seeding.seed_environment_channels()
        before = _seeded()
        Channel.objects.filter(url=self.B).update(enabled=False)
        settings.NOTIFY_URLS = [self.A, self.C]
        assert seeding.seed_environment_channels() == {"created": 0, "updated": 1, "deleted": 0}
        after = _seeded()
        assert after[0] == before[0]
        assert after[1] == (before[1][0], "VXLANMGR_NOTIFY_URLS#2", "VXLANMGR_NOTIFY_URLS #2 (slack)", self.C)
        assert not Channel.objects.get(pk=before[1][0]).enabled  # what the admin set stays

    def test_a_removed_url_removes_its_channel_and_the_rest_keep_theirs(self, settings):
        settings.NOTIFY_URLS = [self.A, self.B, self.C]
        seeding.seed_environment_channels()
        ids = {url: pk for pk, _key, _name, url in _seeded()}
        Channel.objects.filter(url=self.C).update(events=["deleted"])
        settings.NOTIFY_URLS = [self.B, self.C]
        assert seeding.seed_environment_channels() == {"created": 0, "updated": 2, "deleted": 1}
        assert _seeded() == [
            (ids[self.B], "VXLANMGR_NOTIFY_URLS#1", "VXLANMGR_NOTIFY_URLS #1 (mailto)", self.B),
            (ids[self.C], "VXLANMGR_NOTIFY_URLS#2", "VXLANMGR_NOTIFY_URLS #2 (slack)", self.C),
        ]
        assert Channel.objects.get(url=self.C).events == ["deleted"]

    def test_an_empty_variable_removes_seeded_channels_only(self, settings):
        own = Channel.objects.create(name="made in the admin", url=self.A)
        settings.NOTIFY_URLS = [self.A, self.B]
        seeding.seed_environment_channels()
        settings.NOTIFY_URLS = []
        assert seeding.seed_environment_channels()["deleted"] == 2
        assert list(Channel.objects.values_list("pk", flat=True)) == [own.pk]

    def test_a_channel_name_never_shows_a_credential(self, settings):
        settings.NOTIFY_URLS = ["user:secret@host://x", "SLACK://T/B/C"]
        seeding.seed_environment_channels()
        assert [name for _pk, _key, name, _url in _seeded()] == [
            "VXLANMGR_NOTIFY_URLS #1 (?)", "VXLANMGR_NOTIFY_URLS #2 (slack)",
        ]

    def test_a_url_apprise_cannot_use_is_seeded_with_a_warning_naming_the_channel_only(self, settings, caplog):
        settings.NOTIFY_URLS = [self.A, f"nosuchservice://{SECRET}@host/x"]
        seeding.seed_environment_channels()
        assert Channel.objects.count() == 2
        assert "VXLANMGR_NOTIFY_URLS #2 (nosuchservice)" in caplog.text and "Apprise cannot use" in caplog.text
        assert SECRET not in caplog.text and "#1" not in caplog.text

    def test_bootstrap_seeds(self, settings):
        settings.NOTIFY_URLS = [self.A]
        call_command("bootstrap")
        assert [row[3] for row in _seeded()] == [self.A]

    def test_start_up_survives_a_database_error(self, monkeypatch, caplog):
        def broken():
            raise DatabaseError("no such table: monitoring_channel")

        monkeypatch.setattr(seeding, "seed_environment_channels", broken)
        seeding.seed_at_start_up()
        assert "not seeded" in caplog.text


def test_masking_shows_the_scheme_only():
    assert seeding.masked("mailtos://user:pw@mail.example.com?to=a@b") == "mailtos://••••"
    assert seeding.masked("no scheme here") == "?://••••"
    assert not re.search(r"pw|example", seeding.masked("json://pw@example.com"))


def test_silences_are_read_only_in_the_admin(admin_client):
    silence = Silence.objects.create(ends_at=timezone.now() + timezone.timedelta(hours=1), reason="r")
    assert admin_client.get(f"/admin/monitoring/silence/{silence.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/monitoring/silence/{silence.pk}/delete/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_serve_and_monitor_seed_at_start_up():
    # A deployment that sets the variable needs no extra step: either process seeds as it starts.
    server = Server(process_env(VXLANMGR_NOTIFY_URLS="json://127.0.0.1:9/from-serve"), "no")
    try:
        server.start()
        assert list(Channel.objects.values_list("url", flat=True)) == ["json://127.0.0.1:9/from-serve"]
    finally:
        server.cleanup()
    # The monitor seeds before it opens its ICMP socket, so this holds where it may not ping too.
    with running_monitor(VXLANMGR_NOTIFY_URLS="json://127.0.0.1:9/a jsons://example.com/b") as monitor:
        wait_for(lambda: Channel.objects.filter(url="jsons://example.com/b").exists(), 30,
                 message=f"the monitor to seed\n{monitor.output()}")
        assert list(Channel.objects.order_by("from_environment").values_list("url", flat=True)) == [
            "json://127.0.0.1:9/a", "jsons://example.com/b"]
