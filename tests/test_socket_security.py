"""Who may hold a dashboard socket: pages of this very site, and only while their sign-in lasts."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.test import Client

from machines.models import Machine
from monitoring import broadcast
from vxlanmgr.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-watcher-123"


@pytest.fixture
def signed_in(django_user_model):
    user = django_user_model.objects.create_user("watcher", password=PASSWORD)
    user.groups.add(Group.objects.get(name="viewer"))
    client = Client()
    client.force_login(user)
    return client, user


async def connect(client: Client, origin: bytes = b"http://localhost", host: bytes = b"localhost", scheme="ws"):
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    headers = [(b"origin", origin), (b"host", host), (b"cookie", f"sessionid={cookie}".encode())]
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect()
    return communicator, connected


class TestOrigin:
    @pytest.mark.parametrize(
        "origin,host,scheme",
        [
            (b"http://localhost", b"localhost", "ws"),
            (b"http://127.0.0.1:8000", b"127.0.0.1:8000", "ws"),
            (b"https://localhost", b"localhost", "wss"),
            (b"https://localhost:443", b"localhost", "wss"),
        ],
    )
    async def test_the_sites_own_origin_connects(self, signed_in, origin, host, scheme):
        communicator, connected = await connect(signed_in[0], origin, host, scheme)
        assert connected
        await communicator.disconnect()

    @pytest.mark.parametrize(
        "origin,host",
        [
            (b"http://127.0.0.1:9999", b"127.0.0.1:8000"),  # another port of the same host
            (b"http://localhost:3000", b"localhost"),
            (b"https://127.0.0.1:8000", b"127.0.0.1:8000"),  # the site is plain HTTP here
            (b"http://evil.example", b"localhost"),
            (b"null", b"localhost"),
            (b"", b"localhost"),
            (b"http://evil.example", b"evil.example"),  # a host the site does not answer to
        ],
    )
    async def test_any_other_origin_is_refused(self, signed_in, origin, host):
        communicator, connected = await connect(signed_in[0], origin, host)
        assert not connected
        await communicator.disconnect()

    async def test_a_trusted_origin_connects(self, signed_in, settings):
        settings.CSRF_TRUSTED_ORIGINS = ["https://vxlanmgr.example.net"]
        communicator, connected = await connect(signed_in[0], b"https://vxlanmgr.example.net", b"localhost")
        assert connected
        await communicator.disconnect()

    async def test_https_behind_a_tls_proxy_is_the_sites_origin(self, signed_in, settings):
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        client = signed_in[0]
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        headers = [(b"origin", b"https://localhost"), (b"host", b"localhost"), (b"x-forwarded-proto", b"https"),
                   (b"cookie", f"sessionid={cookie}".encode())]
        communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        await communicator.disconnect()


async def a_push_arrives(communicator, machine: Machine) -> bool:
    await communicator.send_json_to({"visible": str(machine.pk)})
    await communicator.receive_nothing(0.1)
    await broadcast.push(broadcast.event(changed=[machine.pk]))
    return f'id="machine-{machine.pk}"' in await communicator.receive_from(2)


make = sync_to_async(
    lambda: Machine.objects.create(hostname="h", ip_address="10.9.0.1", mac_address="02:00:00:00:00:01")
)


class TestSignIn:
    async def test_logging_out_closes_the_socket_at_once(self, layer, signed_in):
        client, _user = signed_in
        machine = await make()
        communicator, connected = await connect(client)
        assert connected and await a_push_arrives(communicator, machine)
        await sync_to_async(client.post)("/logout/")
        closed = await communicator.receive_output(1)
        assert closed == {"type": "websocket.close", "code": 4401}
        await broadcast.push(broadcast.event(changed=[machine.pk]))
        assert await communicator.receive_nothing(0.5)
        await communicator.wait()

    async def test_a_new_password_closes_the_socket(self, layer, signed_in):
        client, user = signed_in
        communicator, connected = await connect(client)
        assert connected

        def change_password():
            user.set_password("another-password-456")
            user.save()

        await sync_to_async(change_password)()
        closed = await communicator.receive_output(1)
        assert closed == {"type": "websocket.close", "code": 4401}
        await communicator.wait()

    async def test_an_expired_session_gets_no_more_fragments(self, layer, signed_in, monkeypatch):
        client, _user = signed_in
        machine = await make()
        communicator, connected = await connect(client)
        assert connected
        monkeypatch.setattr("monitoring.sessions.RECHECK_SECONDS", 0)
        # The session ends without a logout (expired, or deleted by an administrator).
        from django.contrib.sessions.models import Session

        await sync_to_async(Session.objects.all().delete)()
        await communicator.send_json_to({"visible": str(machine.pk)})
        await communicator.receive_nothing(0.1)
        await broadcast.push(broadcast.event(changed=[machine.pk]))
        assert await communicator.receive_output(1) == {"type": "websocket.close", "code": 4401}
        await communicator.wait()


async def test_a_user_without_a_role_gets_no_socket(django_user_model):
    user = await sync_to_async(django_user_model.objects.create_user)("nobody", password=PASSWORD)
    client = Client()
    await sync_to_async(client.force_login)(user)
    communicator, connected = await connect(client)
    assert not connected
    await communicator.disconnect()
