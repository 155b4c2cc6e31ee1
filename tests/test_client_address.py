"""Behind a trusted proxy the client is read from X-Forwarded-For, and a request that does not say who it is
for is refused instead of being taken for the proxy's own."""

import ipaddress

import pytest
from django.test import RequestFactory

from machines.models import Machine
from vxlanmgr.client_address import UnknownClient, client_ip

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.255.0.0/16")]


@pytest.mark.parametrize(
    "forwarded,client",
    [
        ("10.9.9.9", "10.9.9.9"),
        ("6.6.6.6, 10.9.9.9", "10.9.9.9"),  # the left part is whatever the client claimed
        ("10.9.9.9, 10.255.0.7", "10.9.9.9"),  # a second proxy of ours in between
        ("10.9.9.9:51234", "10.9.9.9"),
        ("[2001:db8::9]:51234", "2001:db8::9"),
        ("[2001:db8::9]", "2001:db8::9"),
        ("2001:db8::9", "2001:db8::9"),
        ("::ffff:10.9.9.9", "10.9.9.9"),
    ],
)
def test_the_right_most_untrusted_entry_is_the_client(behind_proxy, forwarded, client):
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == client


@pytest.mark.parametrize("forwarded", [None, "", "unknown", "10.9.9.9, garbage", "10.255.0.7", "127.0.0.1"])
def test_a_proxy_request_without_a_usable_client_fails_closed(behind_proxy, forwarded):
    extra = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    with pytest.raises(UnknownClient):
        client_ip(RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", **extra))


def test_the_api_answers_400_and_stores_nothing(behind_proxy, client, register_token):
    body = '{"hostname": "web-01", "mac_address": "02:00:00:00:00:01"}'
    response = client.put(
        "/api/machines/127.0.0.1", body, content_type="application/json", REMOTE_ADDR="127.0.0.1",
        HTTP_AUTHORIZATION=f"Bearer {register_token}",
    )
    assert response.status_code == 400 and "X-Forwarded-For" in response.json()["error"]
    assert not Machine.objects.exists()
    assert client.get("/login/", REMOTE_ADDR="127.0.0.1").status_code == 400


def test_a_client_talking_directly_is_its_own_address(behind_proxy):
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.5", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert client_ip(request) == "192.0.2.5"
