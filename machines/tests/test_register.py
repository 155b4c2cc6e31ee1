import json

import pytest

from machines.models import ApiToken, Machine, MachineEvent
from machines.tokens import create_token

BODY = {"hostname": "web-01", "mac_address": "AA-BB-CC-DD-EE-F0", "vni": 100, "extra_data": {"rack": "r1"}}


def put(client, ip, token, body=BODY, content_type="application/json", remote="127.0.0.1", **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.put(
        f"/api/machines/{ip}", data=data, content_type=content_type, REMOTE_ADDR=remote, **headers, **extra
    )


@pytest.mark.django_db
class TestRegister:
    def test_it_creates_a_machine_with_location(self, client, register_token):
        response = put(client, "127.0.0.1", register_token)
        assert response.status_code == 201
        machine = Machine.objects.get()
        assert response["Location"] == f"/api/machines/{machine.pk}"
        body = response.json()
        assert body["hostname"] == "web-01"
        assert body["mac_address"] == "aa:bb:cc:dd:ee:f0"
        assert body["status"] == "pending"
        assert body["extra_data"] == {"rack": "r1"}
        assert set(body) == {
            "id", "hostname", "ip_address", "mac_address", "vni", "vtep", "mtu", "status", "extra_data",
            "registered_at", "last_registered_at", "updated_at", "last_seen_at",
        }
        assert (body["vtep"], body["mtu"]) == (None, None)

    def test_the_same_ip_updates_instead_of_duplicating(self, client, register_token):
        put(client, "127.0.0.1", register_token)
        response = put(client, "127.0.0.1", register_token, {**BODY, "hostname": "web-02", "vni": 7})
        assert response.status_code == 200
        machine = Machine.objects.get()
        assert (machine.hostname, machine.vni) == ("web-02", 7)
        assert machine.last_registered_at > machine.registered_at

    def test_a_new_mac_for_a_known_ip_is_logged(self, client, register_token):
        put(client, "127.0.0.1", register_token)
        put(client, "127.0.0.1", register_token, {**BODY, "mac_address": "aa:bb:cc:dd:ee:f1"})
        entry = MachineEvent.objects.get(kind="mac_changed")
        assert entry.mac_address == "aa:bb:cc:dd:ee:f0"
        assert "aa:bb:cc:dd:ee:f1" in entry.detail
        put(client, "127.0.0.1", register_token, {**BODY, "mac_address": "aa:bb:cc:dd:ee:f1"})
        assert MachineEvent.objects.filter(kind="mac_changed").count() == 1

    def test_ipv6_is_stored_normalised(self, client, api_token):
        response = put(client, "2001:0DB8:0:0::1", api_token)
        assert response.status_code == 201
        assert response.json()["ip_address"] == "2001:db8::1"
        assert put(client, "2001:db8::1", api_token).status_code == 200
        assert Machine.objects.count() == 1

    def test_a_register_token_may_register_its_own_ipv6_source(self, client, register_token):
        assert put(client, "2001:db8::5", register_token, remote="2001:db8:0::5").status_code == 201

    def test_a_register_token_cannot_register_another_address(self, client, register_token):
        response = put(client, "10.9.9.9", register_token)
        assert response.status_code == 403
        assert "127.0.0.1" in response.json()["error"]
        assert not Machine.objects.exists()

    def test_an_api_token_may_register_any_address(self, client, api_token):
        assert put(client, "10.9.9.9", api_token).status_code == 201

    def test_forwarded_for_is_ignored_without_trusted_proxies(self, client, register_token):
        response = put(client, "10.9.9.9", register_token, HTTP_X_FORWARDED_FOR="10.9.9.9")
        assert response.status_code == 403

    def test_forwarded_for_is_used_behind_a_trusted_proxy(self, client, register_token, settings):
        import ipaddress

        settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
        response = put(client, "10.9.9.9", register_token, HTTP_X_FORWARDED_FOR="6.6.6.6, 10.9.9.9")
        assert response.status_code == 201


@pytest.mark.django_db
class TestRegisterErrors:
    def test_it_requires_a_token(self, client):
        response = put(client, "127.0.0.1", None)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "error" in response.json()

    def test_it_rejects_unknown_and_revoked_tokens(self, client, register_token):
        assert put(client, "127.0.0.1", "vxm_nope").status_code == 401
        ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
        assert put(client, "127.0.0.1", register_token).status_code == 401
        assert not Machine.objects.exists()

    def test_it_rejects_other_auth_schemes(self, client, register_token):
        response = client.put(
            "/api/machines/127.0.0.1", json.dumps(BODY), content_type="application/json",
            HTTP_AUTHORIZATION=f"Basic {register_token}",
        )
        assert response.status_code == 401

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({**BODY, "hostname": "a" * 64}, "hostname"),
            ({**BODY, "hostname": "ホスト"}, "hostname"),
            ({**BODY, "hostname": "x'; DROP TABLE machines_machine; --"}, "hostname"),
            ({**BODY, "hostname": "<img src=x onerror=alert(1)>"}, "hostname"),
            ({**BODY, "mac_address": "ff:ff:ff:ff:ff:ff"}, "mac_address"),
            ({**BODY, "mac_address": "00:00:00:00:00:00"}, "mac_address"),
            ({**BODY, "vni": 16777216}, "vni"),
            ({**BODY, "extra_data": {"x": "y" * 5000}}, "extra_data"),
            ({**BODY, "extra_data": "text"}, "extra_data"),
            ({**BODY, "vtep": "239.1.1.1"}, "vtep"),
            ({**BODY, "vtep": "0.0.0.0"}, "vtep"),
            ({**BODY, "vtep": "ff02::1"}, "vtep"),
            ({**BODY, "vtep": "192.0.2.300"}, "vtep"),
            ({**BODY, "vtep": 3221225985}, "vtep"),
            ({**BODY, "mtu": 67}, "mtu"),
            ({**BODY, "mtu": 65536}, "mtu"),
            ({**BODY, "mtu": "1500"}, "mtu"),
            ({**BODY, "mtu": 1450.5}, "mtu"),
            ({**BODY, "mtu": True}, "mtu"),
            ({"mac_address": "aa:bb:cc:dd:ee:f0"}, "hostname"),
            ({**BODY, "surprise": 1}, "body"),
            ([1, 2], "body"),
        ],
    )
    def test_invalid_fields_are_named_and_nothing_is_written(self, client, register_token, body, field):
        response = put(client, "127.0.0.1", register_token, body)
        assert response.status_code == 400
        assert field in response.json()["errors"]
        assert not Machine.objects.exists()

    def test_a_bad_vtep_and_mtu_are_both_named(self, client, register_token):
        response = put(client, "127.0.0.1", register_token, {**BODY, "vtep": "224.0.0.5", "mtu": 0})
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert set(errors) == {"vtep", "mtu"}
        assert "multicast" in errors["vtep"][0]
        assert "68" in errors["mtu"][0] and "65535" in errors["mtu"][0]

    def test_an_invalid_path_address_is_a_400(self, client, api_token):
        response = put(client, "999.1.1.1", api_token)
        assert response.status_code == 400
        assert "ip_address" in response.json()["errors"]

    def test_malformed_json_is_a_400(self, client, register_token):
        response = put(client, "127.0.0.1", register_token, '{"hostname": ')
        assert response.status_code == 400
        assert "body" in response.json()["errors"]

    def test_a_body_over_16_kib_is_a_413(self, client, register_token):
        response = put(client, "127.0.0.1", register_token, {**BODY, "pad": "x" * 17000})
        assert response.status_code == 413
        assert not Machine.objects.exists()

    def test_a_non_json_body_is_a_415(self, client, register_token):
        response = put(client, "127.0.0.1", register_token, "hostname=web", content_type="text/plain")
        assert response.status_code == 415

    def test_the_machine_limit_is_a_503_for_new_ips_only(self, client, api_token, settings, make_machine):
        settings.MAX_MACHINES = 1
        make_machine(ip_address="10.0.0.1")
        response = put(client, "10.0.0.2", api_token)
        assert response.status_code == 503
        assert response["Retry-After"]
        assert Machine.objects.count() == 1
        assert put(client, "10.0.0.1", api_token).status_code == 200

    def test_other_methods_are_405(self, client, api_token):
        response = client.post("/api/machines/127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code == 405
        assert "PUT" in response["Allow"]


@pytest.mark.django_db
class TestRateLimits:
    def test_per_ip_limit_answers_429_with_retry_after(self, client, register_token, settings):
        settings.REGISTER_RATE_PER_IP = "3/m"
        codes = [put(client, "127.0.0.1", register_token).status_code for _ in range(4)]
        assert codes == [201, 200, 200, 429]
        response = put(client, "127.0.0.1", register_token)
        assert 1 <= int(response["Retry-After"]) <= 60
        assert "error" in response.json()

    def test_the_per_ip_limit_also_counts_bad_tokens(self, client, settings):
        settings.REGISTER_RATE_PER_IP = "2/m"
        codes = [put(client, "127.0.0.1", "vxm_guess").status_code for _ in range(3)]
        assert codes == [401, 401, 429]

    def test_api_tokens_skip_the_per_ip_limit(self, client, api_token, settings):
        settings.REGISTER_RATE_PER_IP = "2/m"
        codes = {put(client, f"10.0.0.{n}", api_token).status_code for n in range(1, 6)}
        assert codes == {201}

    def test_the_global_limit_applies_to_everyone(self, client, api_token, settings):
        settings.REGISTER_RATE_GLOBAL = "3/m"
        codes = [put(client, f"10.0.0.{n}", api_token).status_code for n in range(1, 5)]
        assert codes == [201, 201, 201, 429]
        assert Machine.objects.count() == 3

    def test_the_default_global_limit_fits_a_boot_storm(self, settings):
        count, period = settings.REGISTER_RATE_GLOBAL.split("/")
        assert period == "m" and int(count) >= settings.MAX_MACHINES


@pytest.mark.django_db
class TestEnvironmentTokens:
    def test_env_tokens_work_and_are_seeded_hashed(self, client, settings):
        settings.REGISTER_TOKEN = "env-register-secret-0123456789"
        assert put(client, "127.0.0.1", settings.REGISTER_TOKEN).status_code == 201
        token = ApiToken.objects.get(from_environment="VXLANMGR_REGISTER_TOKEN")
        assert token.scope == "register"
        assert settings.REGISTER_TOKEN not in token.token_hash

    def test_a_changed_env_token_stops_the_old_value(self, client, settings):
        settings.API_TOKEN = "env-api-secret-old-0123456789"
        assert put(client, "10.0.0.1", settings.API_TOKEN).status_code == 201
        old = settings.API_TOKEN
        settings.API_TOKEN = "env-api-secret-new-0123456789"
        assert put(client, "10.0.0.1", old).status_code == 401
        assert put(client, "10.0.0.1", settings.API_TOKEN).status_code == 200

    def test_last_used_is_recorded(self, client, db):
        token, raw = create_token("t", ApiToken.Scope.REGISTER)
        put(client, "127.0.0.1", raw)
        token.refresh_from_db()
        assert token.last_used_at is not None


@pytest.mark.django_db
def test_a_unix_socket_peer_counts_as_a_local_proxy_when_proxies_are_trusted(client, register_token, settings):
    import ipaddress

    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    response = put(client, "10.9.9.9", register_token, remote="", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert response.status_code == 201
    settings.TRUSTED_PROXIES = []
    assert put(client, "10.9.9.8", register_token, remote="", HTTP_X_FORWARDED_FOR="10.9.9.8").status_code == 403


@pytest.mark.django_db
class TestTokenCache:
    """Tokens are remembered for TOKEN_CACHE_SECONDS (machines/tokens.py): one database read per token per
    process in a storm, not one per request."""

    @pytest.fixture
    def clock(self, monkeypatch):
        from machines import tokens

        now = [1000.0]
        monkeypatch.setattr(tokens.time, "monotonic", lambda: now[0])
        return now

    def test_a_remembered_token_needs_no_lookup(self, client, register_token, django_assert_max_num_queries):
        put(client, "127.0.0.1", register_token)
        with django_assert_max_num_queries(10) as captured:
            assert put(client, "127.0.0.1", register_token).status_code == 200
        assert not [q for q in captured.captured_queries if "machines_apitoken" in q["sql"]]

    def test_a_bulk_revocation_takes_effect_within_the_cache_time(self, client, register_token, clock):
        from machines.tokens import TOKEN_CACHE_SECONDS

        assert put(client, "127.0.0.1", register_token).status_code == 201
        # The admin's "Revoke selected tokens" action: a queryset update, which sends no signal.
        ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")
        clock[0] += TOKEN_CACHE_SECONDS - 0.5
        assert put(client, "127.0.0.1", register_token).status_code == 200
        clock[0] += 1
        assert put(client, "127.0.0.1", register_token).status_code == 401

    def test_revoking_a_token_by_saving_it_takes_effect_at_once(self, client, register_token, clock):
        assert put(client, "127.0.0.1", register_token).status_code == 201
        token = ApiToken.objects.get()
        token.revoked_at = "2026-01-01T00:00:00Z"
        token.save()
        assert put(client, "127.0.0.1", register_token).status_code == 401

    def test_deleting_a_token_takes_effect_at_once(self, client, register_token, clock):
        assert put(client, "127.0.0.1", register_token).status_code == 201
        ApiToken.objects.get().delete()
        assert put(client, "127.0.0.1", register_token).status_code == 401

    def test_a_new_token_works_at_once(self, client, clock):
        assert put(client, "127.0.0.1", "vxm_not-yet").status_code == 401
        token = ApiToken(name="late", scope=ApiToken.Scope.REGISTER)
        token.set_raw("vxm_not-yet")
        # Created without signals, as a restore or another process would: unknown tokens are never remembered.
        ApiToken.objects.bulk_create([token])
        assert put(client, "127.0.0.1", "vxm_not-yet").status_code == 201

    def test_last_used_is_written_at_most_once_a_minute(self, client, register_token, monkeypatch, clock):
        from datetime import timedelta

        from django.utils import timezone

        from machines import tokens

        put(client, "127.0.0.1", register_token)
        first = ApiToken.objects.get().last_used_at
        assert first is not None
        put(client, "127.0.0.1", register_token)
        assert ApiToken.objects.get().last_used_at == first
        later = timezone.now() + timedelta(minutes=2)
        monkeypatch.setattr(tokens.timezone, "now", lambda: later)
        clock[0] += 60  # the remembered copy has expired too: the next request reads the row again
        put(client, "127.0.0.1", register_token)
        assert ApiToken.objects.get().last_used_at == later


@pytest.mark.django_db
class TestRateLimitCounting:
    def test_only_known_tokens_within_their_address_limit_count_globally(self, client, api_token, settings):
        settings.REGISTER_RATE_PER_IP = "2/m"
        settings.REGISTER_RATE_GLOBAL = "4/m"
        _token, register = create_token("host", ApiToken.Scope.REGISTER)
        # Guessers from one address: limited per address, never counted against the fleet's budget.
        guesses = [put(client, "127.0.0.1", "vxm_guess", remote="10.6.6.6").status_code for _ in range(3)]
        assert guesses == [401, 401, 429]
        # A host over its own limit: its extra requests do not count globally either.
        assert [put(client, "127.0.0.1", register).status_code for _ in range(4)] == [201, 200, 429, 429]
        # So two of the four global registrations are left.
        codes = [put(client, f"10.0.0.{n}", api_token).status_code for n in range(1, 4)]
        assert codes == [201, 201, 429]

    def test_retry_after_is_the_rest_of_the_window(self, client, api_token, settings):
        settings.REGISTER_RATE_GLOBAL = "1/h"
        assert put(client, "10.0.0.1", api_token).status_code == 201
        response = put(client, "10.0.0.2", api_token)
        assert response.status_code == 429
        assert 1 <= int(response["Retry-After"]) <= 3600
        assert response.json()["error"].startswith("Too many requests")

    def test_a_cache_outage_fails_open(self, client, api_token, settings, caplog):
        # Nothing listens on port 1: every counter call fails, and registering must still work.
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:1/0",
                "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            }
        }
        settings.REGISTER_RATE_GLOBAL = "1/m"
        assert [put(client, f"10.0.0.{n}", api_token).status_code for n in (1, 2)] == [201, 201]
        assert "rate limit cache unavailable" in caplog.text

    def test_rate_limits_can_be_switched_off(self, client, api_token, settings):
        settings.RATELIMIT_ENABLE = False
        settings.REGISTER_RATE_GLOBAL = "1/m"
        assert {put(client, f"10.0.0.{n}", api_token).status_code for n in (1, 2, 3)} == {201}

    @pytest.mark.parametrize(
        ("rate", "expected"),
        [("30/m", (30, 60)), ("5/10s", (5, 10)), ("7/2m", (7, 120)), ("2/d", (2, 86400)), ("9/", (9, 1))],
    )
    def test_rates_read_as_django_ratelimit_reads_them(self, rate, expected):
        from django_ratelimit.core import _split_rate as theirs

        from machines.http import _split_rate

        assert _split_rate(rate) == theirs(rate) == expected


@pytest.mark.redis
@pytest.mark.django_db
def test_all_limits_take_one_redis_round_trip(require_redis, client, register_token, monkeypatch):
    from redis.client import Redis

    calls = []
    original = Redis.execute_command

    def counting(self, *args, **options):
        calls.append(args[0])
        return original(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", counting)
    assert put(client, "127.0.0.1", register_token).status_code == 201
    assert calls in (["EVALSHA"], ["EVALSHA", "SCRIPT LOAD", "EVALSHA"], ["EVALSHA", "EVAL"])


@pytest.mark.django_db
class TestUnderlay:
    """The VTEP address and MTU a host reports about its vxlan link."""

    def test_they_are_stored_and_returned(self, client, register_token):
        response = put(client, "127.0.0.1", register_token, {**BODY, "vtep": "::ffff:192.0.2.5", "mtu": 1450})
        assert response.status_code == 201
        assert (response.json()["vtep"], response.json()["mtu"]) == ("192.0.2.5", 1450)
        machine = Machine.objects.get()
        assert (machine.vtep, machine.mtu) == ("192.0.2.5", 1450)
        _token, raw = create_token("reader", ApiToken.Scope.API)
        detail = client.get(f"/api/machines/{machine.pk}", HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert (detail.json()["vtep"], detail.json()["mtu"]) == ("192.0.2.5", 1450)

    @pytest.mark.parametrize("vtep", ["127.0.0.1", "169.254.10.1", "100.64.0.1", "fe80::1", "2001:DB8::A"])
    def test_the_overlay_address_policy_does_not_apply_to_the_vtep(self, client, api_token, settings, vtep):
        # The underlay is not pinged: loopback (a lab), link-local and shared addresses are real VTEPs.
        settings.ALLOWED_PREFIXES = []
        response = put(client, "10.0.0.1", api_token, {**BODY, "vtep": vtep, "mtu": 68})
        assert response.status_code == 201, response.content
        assert response.json()["vtep"] == vtep.lower()

    def test_leaving_them_out_keeps_them_and_null_clears_them(self, client, register_token):
        put(client, "127.0.0.1", register_token, {**BODY, "vtep": "192.0.2.5", "mtu": 1450})
        # An older script, or a host whose `ip` cannot show the link's details, says nothing about them.
        response = put(client, "127.0.0.1", register_token, {**BODY, "hostname": "web-02"})
        assert response.status_code == 200
        assert (response.json()["hostname"], response.json()["vtep"], response.json()["mtu"]) == (
            "web-02", "192.0.2.5", 1450,
        )
        # Each is kept or replaced on its own.
        response = put(client, "127.0.0.1", register_token, {**BODY, "mtu": 9000})
        assert (response.json()["vtep"], response.json()["mtu"]) == ("192.0.2.5", 9000)
        response = put(client, "127.0.0.1", register_token, {**BODY, "vtep": "192.0.2.6"})
        assert (response.json()["vtep"], response.json()["mtu"]) == ("192.0.2.6", 9000)
        response = put(client, "127.0.0.1", register_token, {**BODY, "vtep": None, "mtu": None})
        assert (response.json()["vtep"], response.json()["mtu"]) == (None, None)
        assert Machine.objects.values_list("vtep", "mtu").get() == (None, None)

    def test_the_machine_page_shows_them(self, viewer_client, register_token, make_machine):
        put(viewer_client, "127.0.0.1", register_token, {**BODY, "vtep": "2001:db8::5", "mtu": 1450})
        machine = Machine.objects.get()
        html = viewer_client.get(f"/machines/{machine.pk}").content.decode()
        assert '<dt>VTEP address</dt><dd class="cell-mono">2001:db8::5</dd>' in html
        assert "<dt>MTU</dt><dd>1450</dd>" in html
        unknown = make_machine(ip_address="10.0.0.9")
        html = viewer_client.get(f"/machines/{unknown.pk}", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert '<dt>VTEPアドレス</dt><dd class="cell-mono">—</dd>' in html
        assert "<dt>MTU</dt><dd>—</dd>" in html

    def test_a_new_vtep_is_logged_as_a_change(self, client, register_token, caplog):
        put(client, "127.0.0.1", register_token, {**BODY, "vtep": "192.0.2.5"})
        caplog.clear()
        with caplog.at_level("DEBUG", logger="vxlanmgr.inventory"):
            put(client, "127.0.0.1", register_token, {**BODY, "vtep": "192.0.2.5"})
            put(client, "127.0.0.1", register_token, {**BODY, "vtep": "192.0.2.7"})
        levels = [(record.levelname, "details changed" in record.getMessage()) for record in caplog.records]
        assert levels == [("DEBUG", False), ("INFO", True)]


@pytest.mark.django_db
class TestMachineLimitQueries:
    def test_far_below_the_limit_a_creation_counts_nothing(self, client, api_token, settings):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        settings.MAX_MACHINES = 10**9
        with CaptureQueriesContext(connection) as captured:
            assert put(client, "10.0.0.1", api_token).status_code == 201
        sql = " ".join(q["sql"] for q in captured.captured_queries)
        assert "COUNT(" not in sql and "advisory" not in sql

    def test_past_the_id_bound_it_counts(self, client, api_token, settings, make_machine):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        existing = make_machine(ip_address="10.0.0.1")
        settings.MAX_MACHINES = existing.pk + 500  # the next id is over the bound; two machines are far below it
        with CaptureQueriesContext(connection) as captured:
            assert put(client, "10.0.0.2", api_token).status_code == 201
        assert "COUNT(" in " ".join(q["sql"] for q in captured.captured_queries)
        assert Machine.objects.count() == 2


@pytest.mark.django_db
def test_the_prepared_lookup_builds_the_machine_the_orm_would(make_machine):
    from django.db import transaction
    from django.utils import timezone

    from machines.services import _locked_machine

    now = timezone.now()
    for fields in (
        {"ip_address": "10.0.0.7", "extra_data": {"rack": "r1", "ports": [1, 2]}, "vni": None},
        {"ip_address": "2001:db8::7", "status": "active", "last_seen_at": now, "last_rtt_ms": 0.25,
         "check_interval": 60, "unreachable_since": now, "consecutive_failures": 2},
    ):
        machine = make_machine(**fields)
        with transaction.atomic():
            found = _locked_machine(machine.ip_address)
        expected = Machine.objects.get(pk=machine.pk)
        assert {f.attname: getattr(found, f.attname) for f in Machine._meta.concrete_fields} == {
            f.attname: getattr(expected, f.attname) for f in Machine._meta.concrete_fields
        }
        assert (found._state.adding, found._state.db) == (False, "default")
    with transaction.atomic():
        assert _locked_machine("10.255.255.254") is None
