"""The dashboard socket, over the configured channel layer (Redis in CI) and the in-memory one."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from machines.models import Machine
from monitoring import broadcast
from vxlanmgr.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def session_cookie(client, operator):
    # The shared operator: whoever may watch the dashboard, however roles give that right.
    client.force_login(operator)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def connect(cookie: str | None, origin: bytes = b"http://localhost", language: str = "en"):
    headers = [(b"origin", origin), (b"host", b"localhost")]
    cookies = f"django_language={language}"
    if cookie:
        cookies += f"; {django_settings.SESSION_COOKIE_NAME}={cookie}"
    headers.append((b"cookie", cookies.encode()))
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, _subprotocol = await communicator.connect()
    return communicator, connected


async def show(communicator, *machines, status="", q="", page=1):
    view = {"visible": ",".join(str(m.pk) for m in machines), "status": status, "q": q, "page": str(page)}
    await communicator.send_to(text_data=json.dumps(view))
    await communicator.receive_nothing(0.1)  # let the consumer store the view


make = sync_to_async(lambda **fields: Machine.objects.create(mac_address="02:00:00:00:00:01", vni=1, **fields))


class TestDashboardConsumer:
    async def test_anonymous_sockets_are_refused(self, layer):
        communicator, connected = await connect(None)
        assert not connected
        await communicator.disconnect()

    async def test_foreign_origins_are_refused(self, layer, session_cookie):
        communicator, connected = await connect(session_cookie, origin=b"http://evil.example")
        assert not connected
        await communicator.disconnect()

    async def test_a_status_change_arrives_as_the_row_and_counts(self, layer, session_cookie):
        machine = await make(hostname="web-1", ip_address="10.0.0.1", status="unreachable")
        communicator, connected = await connect(session_cookie)
        assert connected
        try:
            await show(communicator, machine)
            await broadcast.push(broadcast.event(changed=[machine.pk], announce={machine.pk: "unreachable"}))
            html = await communicator.receive_from(timeout=5)
            # The machine once, as the page's own row: the ws extension swaps it in by its id.
            assert f'<tr id="machine-{machine.pk}" class="machine-row row-unreachable flash">' in html
            assert html.count(f'id="machine-{machine.pk}"') == 1 and "machine-card" not in html
            assert '<span id="status-counts">' in html
            assert '<span class="status-unreachable">1 unreachable</span>' in html
            assert "web-1 is now Unreachable." in html
        finally:
            await communicator.disconnect()

    async def test_each_socket_renders_in_its_own_language(self, layer, session_cookie):
        machine = await make(hostname="web-ja", ip_address="10.0.0.2", status="active")
        communicator, _connected = await connect(session_cookie, language="ja")
        try:
            await show(communicator, machine)
            await broadcast.push(broadcast.event(changed=[machine.pk]))
            html = await communicator.receive_from(timeout=5)
            assert "稼働中" in html
        finally:
            await communicator.disconnect()

    async def test_deleted_rows_are_removed_and_new_machines_refresh_the_list(self, layer, session_cookie):
        machine = await make(hostname="gone", ip_address="10.0.0.3")
        communicator, _connected = await connect(session_cookie)
        try:
            await show(communicator, machine)
            pk = machine.pk
            await sync_to_async(machine.delete)()
            await broadcast.push(broadcast.event(deleted=[pk]))
            html = await communicator.receive_from(timeout=5)
            assert f'<tr id="machine-{pk}" hx-swap-oob="delete"></tr>' in html
            assert html.count(f'id="machine-{pk}"') == 1
            new = await make(hostname="new", ip_address="10.0.0.4")
            await broadcast.push(broadcast.event(changed=[new.pk], created=True))
            html = await communicator.receive_from(timeout=5)
            assert '<div id="live-signal" data-refresh="true"></div>' in html
            assert f'id="machine-{new.pk}"' not in html  # not on this page yet: never push a row it lacks
        finally:
            await communicator.disconnect()

    async def test_a_change_that_moves_a_machine_onto_the_page_refreshes_it(self, layer, session_cookie):
        shown = await make(hostname="a", ip_address="10.0.0.5", status="unreachable")
        other = await make(hostname="b", ip_address="10.0.0.6", status="unreachable")
        communicator, _connected = await connect(session_cookie)
        try:
            await show(communicator, shown, status="unreachable")
            await broadcast.push(broadcast.event(changed=[other.pk], announce={other.pk: "unreachable"}))
            html = await communicator.receive_from(timeout=5)
            assert 'data-refresh="true"' in html
        finally:
            await communicator.disconnect()

    async def test_an_idle_socket_stays_subscribed(self, layer, session_cookie):
        machine = await make(hostname="quiet", ip_address="10.0.0.9", status="active")
        communicator, _connected = await connect(session_cookie)
        try:
            await show(communicator, machine)
            # Longer than the 5 s the Redis layer blocks per read: the consumer must survive the quiet.
            await communicator.receive_nothing(6.5)
            await broadcast.push(broadcast.event(changed=[machine.pk]))
            assert f'id="machine-{machine.pk}"' in await communicator.receive_from(timeout=5)
        finally:
            await communicator.disconnect()

    async def test_the_group_is_left_on_disconnect(self, layer, session_cookie):
        communicator, _connected = await connect(session_cookie)
        await communicator.disconnect()
        # Nothing to receive and no error: a send to an empty group is fine.
        assert await broadcast.push(broadcast.event(changed=[1]))


async def test_the_configured_layer_is_redis_in_ci(require_redis):
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"
