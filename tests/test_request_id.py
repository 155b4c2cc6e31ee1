"""Request ids: made for every request unless a trusted proxy sends a sane one, returned in X-Request-ID, quoted
in every JSON error, carried by the log lines written meanwhile (the services' and the push's) and bound to a
WebSocket connection's lines."""

import ipaddress
import json
import logging
import re

import pytest
from channels.layers import InMemoryChannelLayer, channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import path
from django_guid import get_guid

from monitoring import broadcast
from monitoring.consumers import DashboardConsumer
from vxlanmgr.request_id import LogFilter, WebSocketRequestId

GENERATED = re.compile(r"[0-9a-f]{32}")
BODY = {"hostname": "web-01", "mac_address": "02:00:00:00:00:01", "vni": 100}
PROXY = "192.0.2.10"
NGINX_ID = "0123456789abcdef0123456789abcdef"


def put(client, token, body=BODY, ip="127.0.0.1", **extra):
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.put(f"/api/machines/{ip}", data=data, content_type="application/json", **headers, **extra)


def through_proxy(request_id: str) -> dict[str, str]:
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "127.0.0.1", "HTTP_X_REQUEST_ID": request_id}


@pytest.fixture
def trusted_proxy(settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network(f"{PROXY}/32")]


@pytest.fixture
def records(caplog):
    """The records of vxlanmgr's loggers, with the request id put on them as the console handler's filter does."""
    caplog.handler.addFilter(LogFilter())
    caplog.set_level(logging.DEBUG, logger="vxlanmgr")
    return caplog


@pytest.mark.django_db
class TestTheHeader:
    def test_it_is_made_for_a_request_without_one(self, client):
        response = client.get("/health")
        assert GENERATED.fullmatch(response["X-Request-ID"])

    def test_every_request_gets_its_own(self, client):
        assert client.get("/health")["X-Request-ID"] != client.get("/health")["X-Request-ID"]

    def test_it_is_taken_from_a_trusted_proxy(self, client, trusted_proxy):
        response = client.get("/health", **through_proxy(NGINX_ID))
        assert response["X-Request-ID"] == NGINX_ID

    @pytest.mark.parametrize(
        "sane", ["a", "x" * 64, "5f0c7f4e-2d4b-4b8e-9c55-1a2b3c4d5e6f", "Root=1-67891233.abc_d:e+f/g="]
    )
    def test_any_sane_value_up_to_64_characters_is_taken(self, client, trusted_proxy, sane):
        assert client.get("/health", **through_proxy(sane))["X-Request-ID"] == sane

    @pytest.mark.parametrize(
        "insane", ["x" * 65, "two words", "a\tb", "<script>", "quote\"d", "semi;colon", "ünicode", "%0a", "a,b"]
    )
    def test_an_insane_value_is_replaced(self, client, trusted_proxy, insane):
        response = client.get("/health", **through_proxy(insane))
        assert GENERATED.fullmatch(response["X-Request-ID"])

    def test_one_from_an_untrusted_peer_is_replaced(self, client, trusted_proxy):
        response = client.get("/health", REMOTE_ADDR="198.51.100.7", HTTP_X_REQUEST_ID=NGINX_ID)
        assert GENERATED.fullmatch(response["X-Request-ID"])

    def test_one_is_never_believed_without_trusted_proxies(self, client):
        response = client.get("/health", HTTP_X_REQUEST_ID=NGINX_ID)
        assert GENERATED.fullmatch(response["X-Request-ID"])

    def test_a_unix_socket_peer_counts_as_the_local_proxy(self, client, trusted_proxy):
        # As for X-Forwarded-For: no peer address means a Unix socket, which only a local proxy can reach.
        response = client.get("/health", REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="127.0.0.1", HTTP_X_REQUEST_ID=NGINX_ID)
        assert response["X-Request-ID"] == NGINX_ID

    def test_pages_and_refusals_carry_it_too(self, client, trusted_proxy):
        assert GENERATED.fullmatch(client.get("/login/")["X-Request-ID"])
        # Refused by the client-address middleware below it: no X-Forwarded-For from the proxy.
        response = client.get("/api/machines", REMOTE_ADDR=PROXY, HTTP_X_REQUEST_ID=NGINX_ID)
        assert response.status_code == 400
        assert response["X-Request-ID"] == NGINX_ID


@pytest.mark.django_db
class TestJsonErrors:
    def test_a_400_from_the_register_api_quotes_it(self, client, register_token):
        response = put(client, register_token, body="{not json")
        assert response.status_code == 400
        assert "body" in response.json()["errors"]
        assert response.json()["request_id"] == response["X-Request-ID"]

    def test_a_401_quotes_it(self, client):
        response = put(client, None)
        assert response.status_code == 401
        assert response.json()["request_id"] == response["X-Request-ID"]

    def test_the_proxys_id_is_quoted(self, client, register_token, trusted_proxy):
        response = put(client, "wrong", **through_proxy(NGINX_ID))
        assert response.status_code == 401
        assert response.json()["request_id"] == NGINX_ID

    @pytest.mark.parametrize(
        "url", ["/api/machines?page=0", "/api/machines/999999", "/api/machines/1/history?resolution=week"]
    )
    def test_list_detail_and_history_errors_quote_it(self, client, api_token, make_machine, url):
        make_machine()
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code in (400, 404)
        assert response.json()["request_id"] == response["X-Request-ID"]

    def test_a_405_and_metrics_errors_quote_it(self, client):
        for response in (client.post("/api/machines"), client.get("/metrics")):
            assert response.status_code in (401, 405)
            assert response.json()["request_id"] == response["X-Request-ID"]

    def test_a_success_has_no_request_id_in_its_body(self, client, register_token):
        response = put(client, register_token)
        assert response.status_code == 201
        assert "request_id" not in response.json()


@pytest.fixture
def in_memory_layer(settings):
    # The in-memory layer sends the push from the request's own thread, as `make run` does. (On Redis pushes are
    # merged across requests in a thread of their own, so they carry no one request's id.)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


class TestLogLines:
    @pytest.mark.django_db
    def test_the_services_lines_carry_it(self, client, register_token, api_token, records):
        created = put(client, register_token)
        changed = put(client, register_token, {**BODY, "hostname": "web-02", "mac_address": "02:00:00:00:00:02"})
        machine_id = created.json()["id"]
        deleted = client.delete(f"/api/machines/{machine_id}?force=true", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert deleted.status_code == 204
        lines = [r for r in records.records if r.name == "vxlanmgr.inventory"]

        def written_for(response) -> list[str]:
            return [r.getMessage() for r in lines if r.request_id == response["X-Request-ID"]]

        assert written_for(created) == [f"registered web-01 127.0.0.1 as machine {machine_id}"]
        assert written_for(changed) == [
            f"machine {machine_id} 127.0.0.1: MAC address changed from 02:00:00:00:00:01 to 02:00:00:00:00:02; "
            "check for an address conflict",
            f"re-registered web-02 127.0.0.1 (machine {machine_id}, pending, details changed)",
        ]
        assert written_for(deleted) == [
            f"deleted web-02 127.0.0.1 (machine {machine_id}, pending) by API token test api"
        ]
        assert len(lines) == 4
        for record in lines:
            assert record.machine_id == machine_id and record.machine_ip == "127.0.0.1"

    @pytest.mark.django_db(transaction=True)
    def test_the_push_a_registration_causes_carries_it(self, client, register_token, records, in_memory_layer,
                                                        monkeypatch):
        async def unavailable(*args, **kwargs):
            raise ConnectionError("layer down")

        monkeypatch.setattr(broadcast, "_layer_down", False)
        monkeypatch.setattr(InMemoryChannelLayer, "group_send", unavailable)
        response = put(client, register_token)
        assert response.status_code == 201
        paused = [r for r in records.records if r.name == "vxlanmgr.broadcast"]
        assert [r.request_id for r in paused] == [response["X-Request-ID"]], [r.getMessage() for r in paused]

    @pytest.mark.django_db
    def test_django_logs_a_refused_request_with_it(self, client, records):
        records.set_level(logging.WARNING, logger="django.request")
        response = put(client, None)
        [line] = [r for r in records.records if r.name == "django.request"]
        assert line.request_id == response["X-Request-ID"]

    def test_outside_a_request_there_is_none(self, records):
        logging.getLogger("vxlanmgr.test").info("start-up")
        assert records.records[-1].request_id is None
        assert get_guid() is None


async def _connect(application, headers=(), client=("198.51.100.7", 50000)):
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=list(headers))
    communicator.scope["client"] = client
    return communicator


@pytest.mark.django_db(transaction=True)
class TestWebSockets:
    async def test_the_connection_gets_an_id_its_lines_carry(self, records):
        seen = {}

        class Recording(DashboardConsumer):
            async def connect(self):
                await super().connect()
                seen["id"] = get_guid()
                logging.getLogger("vxlanmgr.live").info("a line for this connection")

        application = WebSocketRequestId(URLRouter([path("ws/dashboard/", Recording.as_asgi())]))
        communicator = await _connect(application)
        connected, code = await communicator.connect()
        assert not connected and code == 4401  # nobody signed in
        await communicator.disconnect()
        assert GENERATED.fullmatch(seen["id"])
        [line] = [r for r in records.records if r.getMessage() == "a line for this connection"]
        assert line.request_id == seen["id"]

    async def test_a_trusted_proxys_id_is_taken_and_an_untrusted_ones_is_not(self, settings):
        settings.TRUSTED_PROXIES = [ipaddress.ip_network(f"{PROXY}/32")]
        scopes = []

        async def app(scope, receive, send):
            scopes.append(scope)
            await send({"type": "websocket.close", "code": 1000})

        application = WebSocketRequestId(app)
        header = [(b"x-request-id", NGINX_ID.encode())]
        for client in [(PROXY, 1), ("198.51.100.7", 1)]:
            communicator = await _connect(application, header, client)
            await communicator.connect()
            await communicator.disconnect()
        communicator = await _connect(application, [(b"x-request-id", b"x" * 65)], (PROXY, 1))
        await communicator.connect()
        await communicator.disconnect()
        assert scopes[0]["request_id"] == NGINX_ID
        assert GENERATED.fullmatch(scopes[1]["request_id"])
        assert GENERATED.fullmatch(scopes[2]["request_id"])
