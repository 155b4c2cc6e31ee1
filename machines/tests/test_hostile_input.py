"""What an attacker sent in the security review: each is refused with 400 naming the field, and nothing is stored."""

import pytest

from machines.models import Machine, MachineEvent

from .test_register import BODY, put

pytestmark = [pytest.mark.django_db]


def refused(response, field: str) -> str:
    assert response.status_code == 400, response.content
    assert not Machine.objects.exists() and not MachineEvent.objects.exists()
    return " ".join(response.json()["errors"][field])


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client, api_token, constant):
    body = '{"hostname": "web-01", "mac_address": "02:00:00:00:00:01", "extra_data": {"load": ' + constant + "}}"
    assert "finite" in refused(put(client, "10.0.0.9", api_token, body), "extra_data")


def test_deep_nesting_is_refused_whatever_the_depth(client, api_token):
    for depth in (17, 900):
        nested = {}
        for _ in range(depth - 1):
            nested = {"n": nested}
        assert "nested" in refused(put(client, "10.0.0.9", api_token, {**BODY, "extra_data": nested}), "extra_data")
    # Deeper than Python's own parser goes: still a clear 400, not a RecursionError.
    body = '{"hostname": "web-01", "mac_address": "02:00:00:00:00:01", "extra_data": ' + "[" * 5000 + "]" * 5000 + "}"
    assert "nested too deeply" in refused(put(client, "10.0.0.9", api_token, body), "body")


def test_too_many_keys_are_refused(client, api_token):
    extra = {"tags": list(range(300))}
    assert "keys and items" in refused(put(client, "10.0.0.9", api_token, {**BODY, "extra_data": extra}), "extra_data")


def test_sixteen_levels_and_a_few_hundred_items_are_fine(client, api_token):
    nested = {"tags": list(range(200))}
    for _ in range(14):
        nested = {"n": nested}
    assert put(client, "10.0.0.9", api_token, {**BODY, "extra_data": nested}).status_code == 201


@pytest.mark.parametrize(
    "extra",
    [{"note": "a\u0000b"}, {"a\u0000b": 1}, {"list": ["ok", "nul\u0000"]}],
    ids=["value", "key", "in-a-list"],
)
def test_the_nul_character_is_refused(client, api_token, extra):
    assert "NUL" in refused(put(client, "10.0.0.9", api_token, {**BODY, "extra_data": extra}), "extra_data")


def test_a_nul_in_the_host_name_is_refused(client, api_token):
    refused(put(client, "10.0.0.9", api_token, {**BODY, "hostname": "web\u000001"}), "hostname")


def test_searching_for_a_nul_finds_nothing_instead_of_failing(client, api_token, operator_client):
    put(client, "10.0.0.9", api_token)
    assert client.get("/api/machines?q=%00", HTTP_AUTHORIZATION=f"Bearer {api_token}").status_code == 200
    assert operator_client.get("/?q=web%00").status_code == 200


@pytest.mark.parametrize(
    "address",
    ["255.255.255.255", "169.254.169.254", "240.0.0.1", "::1", "fe80::1", "100.64.0.1", "127.0.0.1", "0.1.2.3"],
)
def test_addresses_no_overlay_host_has_are_refused(client, api_token, settings, address):
    settings.ALLOWED_PREFIXES = []
    assert "VXLANMGR_ALLOWED_PREFIXES" in refused(put(client, address, api_token), "ip_address")


@pytest.mark.parametrize("address", ["10.0.0.9", "192.168.7.1", "172.16.0.4", "fd00::9", "8.8.4.4", "2a00:1450::1"])
def test_private_and_global_addresses_register_by_default(client, api_token, settings, address):
    settings.ALLOWED_PREFIXES = []
    assert put(client, address, api_token).status_code == 201


def test_a_listed_prefix_allows_what_the_default_refuses(client, api_token, register_token, settings):
    import ipaddress

    settings.ALLOWED_PREFIXES = [ipaddress.ip_network("127.0.0.0/8")]
    assert put(client, "127.0.0.1", register_token).status_code == 201
    assert put(client, "169.254.1.1", api_token).status_code == 400
