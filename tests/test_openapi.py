"""docs/openapi.yaml against the real server.

Every (path, method, status) the spec documents has at least one scenario below that makes the server
answer exactly that, and every answer must validate against the spec. So the spec cannot document a
response the server never gives, the server cannot give an undocumented status or shape, and a new
URL or method under /api/ fails here until the spec describes it.
"""

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import pytest
import yaml
from channels.layers import channel_layers
from django.conf import settings as django_settings
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
from openapi_spec_validator import validate as validate_spec

from machines.models import ApiToken, Machine
from machines.tokens import create_token
from monitoring.models import DailyBucket, HourlyBucket, PingResult, Silence

SPEC_PATH = django_settings.BASE_DIR / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
ITEM = "/api/machines/{key}"
HISTORY = "/api/machines/{key}/history"
SILENCES = "/api/silences"
SILENCE = "/api/silences/{key}"
LIST = "/api/machines"
HEALTH = "/health"
SOURCE = "127.0.0.1"  # REMOTE_ADDR of Django's test client
BODY = {"hostname": "web-01", "mac_address": "AA-BB-CC-DD-EE-F0", "vni": 100, "extra_data": {"rack": "r1"}}
DEAD_REDIS = {
    "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
}


class Request(DjangoOpenAPIRequest):
    """openapi-core's Django request, reading only the body the server read.

    The server refuses some requests (413) without reading the body, which in the declared-length test is
    shorter than its Content-Length: reading it afterwards would fail in the test client.
    """

    @property
    def body(self) -> bytes:
        return getattr(self.request, "_body", b"")


@cache
def spec_dict() -> dict:
    with open(SPEC_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def documented() -> set[tuple[str, str, int]]:
    return {
        (path, method, int(status))
        for path, item in spec_dict()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for status in operation["responses"]
    }


# ---------------------------------------------------------------------------------------------------
# Scenarios: each one makes the real server give one documented response.


@dataclass
class Ctx:
    client: Any
    settings: Any
    register_token: str
    api_token: str
    make_machine: Callable[..., Machine]
    user_model: Any

    def login(self) -> None:
        # A dashboard session; no password, so no slow hashing.
        from django.contrib.auth.models import Group

        operator = self.user_model.objects.create_user("operator")
        operator.groups.add(Group.objects.get(name="operator"))
        self.client.force_login(operator)

    def bearer(self, token: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def put(self, ip: str, token: str | None, body: Any = BODY, content_type: str = "application/json", **extra):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        headers = self.bearer(token) if token else {}
        return self.client.put(f"/api/machines/{ip}", data=data, content_type=content_type, **headers, **extra)

    def get(self, path: str, token: str | None = None, **params):
        headers = self.bearer(token) if token else {}
        return self.client.get(path, params, **headers)

    def send(self, method: str, path: str, token: str | None, body: Any = None,
             content_type: str = "application/json"):
        headers = self.bearer(token) if token else {}
        data = body if body is None or isinstance(body, str | bytes) else json.dumps(body)
        return getattr(self.client, method)(path, data=data, content_type=content_type, **headers)


@dataclass(frozen=True)
class Scenario:
    path: str
    method: str
    status: int
    run: Callable[[Ctx], HttpResponse]


SCENARIOS: dict[str, Scenario] = {}


def scenario(path: str, method: str, status: int):
    def register(run: Callable[[Ctx], HttpResponse]):
        assert run.__name__ not in SCENARIOS, run.__name__
        SCENARIOS[run.__name__] = Scenario(path, method, status, run)
        return run

    return register


# PUT /api/machines/{key}


@scenario(ITEM, "put", 201)
def put_creates_with_register_token(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token)


@scenario(ITEM, "put", 201)
def put_creates_any_address_with_api_token(ctx: Ctx):
    return ctx.put("2001:db8::5", ctx.api_token, {"hostname": "V6.example.", "mac_address": "0242.ac11.0002"})


@scenario(ITEM, "put", 201)
def put_creates_ipv4_mapped_as_ipv4(ctx: Ctx):
    return ctx.put("::ffff:10.0.0.9", ctx.api_token, {**BODY, "vni": None, "extra_data": None})


@scenario(ITEM, "put", 201)
def put_own_address_through_trusted_proxy(ctx: Ctx):
    ctx.settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]
    return ctx.put("10.9.8.7", ctx.register_token, HTTP_X_FORWARDED_FOR="10.9.8.7")


@scenario(ITEM, "put", 200)
def put_updates_known_address(ctx: Ctx):
    ctx.make_machine(ip_address=SOURCE, mac_address="02:00:00:00:00:01", last_seen_at=timezone.now())
    return ctx.put(SOURCE, ctx.register_token, {"hostname": "web-02", "mac_address": "02:00:00:00:00:02"})


@scenario(ITEM, "put", 200)
def put_updates_known_address_at_machine_limit(ctx: Ctx):
    ctx.settings.MAX_MACHINES = 1
    ctx.make_machine(ip_address=SOURCE)
    return ctx.put(SOURCE, ctx.register_token)


@scenario(ITEM, "put", 400)
def put_malformed_json(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token, '{"hostname": ')


@scenario(ITEM, "put", 400)
def put_body_not_an_object(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token, [BODY])


@scenario(ITEM, "put", 400)
def put_bad_address_in_path(ctx: Ctx):
    return ctx.put("not-an-ip", ctx.api_token)


@scenario(ITEM, "put", 400)
def put_every_field_bad(ctx: Ctx):
    bad = {"hostname": "-x", "mac_address": "01:00:5e:00:00:01", "vni": 2**24, "extra_data": [], "id": 3}
    return ctx.put(SOURCE, ctx.register_token, bad)


@scenario(ITEM, "put", 401)
def put_without_token(ctx: Ctx):
    return ctx.put(SOURCE, None)


@scenario(ITEM, "put", 401)
def put_with_unknown_token(ctx: Ctx):
    return ctx.put(SOURCE, "vxm_not-a-real-token")


@scenario(ITEM, "put", 401)
def put_with_revoked_token(ctx: Ctx):
    token, raw = create_token("revoked", ApiToken.Scope.API)
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    return ctx.put(SOURCE, raw)


@scenario(ITEM, "put", 401)
def put_with_session_only(ctx: Ctx):
    ctx.login()
    return ctx.put(SOURCE, None)


@scenario(ITEM, "put", 403)
def put_register_token_other_address(ctx: Ctx):
    return ctx.put("10.0.0.5", ctx.register_token)


@scenario(ITEM, "put", 413)
def put_body_over_16_kib(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token, {**BODY, "extra_data": {"pad": "x" * 17 * 1024}})


@scenario(ITEM, "put", 413)
def put_declared_length_over_16_kib(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token, CONTENT_LENGTH=str(16 * 1024 + 1))


@scenario(ITEM, "put", 415)
def put_text_plain(ctx: Ctx):
    return ctx.put(SOURCE, ctx.register_token, json.dumps(BODY), content_type="text/plain")


@scenario(ITEM, "put", 429)
def put_over_per_address_rate(ctx: Ctx):
    ctx.settings.RATELIMIT_ENABLE = True
    ctx.settings.REGISTER_RATE_PER_IP = "1/m"
    first = ctx.put(SOURCE, ctx.register_token)
    assert first.status_code == 201, first.content
    return ctx.put(SOURCE, ctx.register_token)


@scenario(ITEM, "put", 429)
def put_unauthenticated_over_per_address_rate(ctx: Ctx):
    ctx.settings.RATELIMIT_ENABLE = True
    ctx.settings.REGISTER_RATE_PER_IP = "1/m"
    assert ctx.put(SOURCE, None).status_code == 401
    return ctx.put(SOURCE, None)


@scenario(ITEM, "put", 429)
def put_over_global_rate(ctx: Ctx):
    ctx.settings.RATELIMIT_ENABLE = True
    ctx.settings.REGISTER_RATE_GLOBAL = "1/m"
    assert ctx.put("10.0.0.1", ctx.api_token).status_code == 201
    return ctx.put("10.0.0.2", ctx.api_token)


@scenario(ITEM, "put", 503)
def put_new_address_over_machine_limit(ctx: Ctx):
    ctx.settings.MAX_MACHINES = 0
    return ctx.put(SOURCE, ctx.register_token)


# GET /api/machines/{key}


@scenario(ITEM, "get", 200)
def get_item_with_api_token(ctx: Ctx):
    machine = ctx.make_machine(status=Machine.Status.ACTIVE, vni=None, last_seen_at=timezone.now())
    return ctx.get(f"/api/machines/{machine.pk}", ctx.api_token)


@scenario(ITEM, "get", 200)
def get_item_with_session(ctx: Ctx):
    machine = ctx.make_machine(ip_address="2001:db8::77", extra_data={"a": [1, {"b": None}]})
    ctx.login()
    return ctx.get(f"/api/machines/{machine.pk}")


@scenario(ITEM, "get", 200)
def get_item_with_uptime(ctx: Ctx):
    machine = ctx.make_machine(status=Machine.Status.ACTIVE)
    now = timezone.now()
    for minutes, ok in [(50, False), (30, True), (10, True)]:
        _ping(machine, now - timedelta(minutes=minutes), ok)
    return ctx.get(f"/api/machines/{machine.pk}", ctx.api_token)


@scenario(ITEM, "get", 401)
def get_item_without_credentials(ctx: Ctx):
    return ctx.get(f"/api/machines/{ctx.make_machine().pk}")


@scenario(ITEM, "get", 401)
def get_item_with_unknown_token(ctx: Ctx):
    return ctx.get(f"/api/machines/{ctx.make_machine().pk}", "vxm_not-a-real-token")


@scenario(ITEM, "get", 403)
def get_item_with_register_token(ctx: Ctx):
    return ctx.get(f"/api/machines/{ctx.make_machine().pk}", ctx.register_token)


@scenario(ITEM, "get", 404)
def get_item_unknown_id(ctx: Ctx):
    return ctx.get("/api/machines/999999", ctx.api_token)


@scenario(ITEM, "get", 404)
def get_item_by_address_instead_of_id(ctx: Ctx):
    ctx.make_machine(ip_address="10.0.0.5")
    return ctx.get("/api/machines/10.0.0.5", ctx.api_token)


# DELETE /api/machines/{key}


def _delete(ctx: Ctx, pk, token: str | None, query: str = ""):
    headers = ctx.bearer(token) if token else {}
    return ctx.client.delete(f"/api/machines/{pk}{query}", **headers)


@scenario(ITEM, "delete", 204)
def delete_unreachable_machine(ctx: Ctx):
    return _delete(ctx, ctx.make_machine(status=Machine.Status.UNREACHABLE).pk, ctx.api_token)


@scenario(ITEM, "delete", 204)
def delete_active_machine_forced(ctx: Ctx):
    return _delete(ctx, ctx.make_machine(status=Machine.Status.ACTIVE).pk, ctx.api_token, "?force=true")


@scenario(ITEM, "delete", 401)
def delete_without_token(ctx: Ctx):
    return _delete(ctx, ctx.make_machine(status=Machine.Status.UNREACHABLE).pk, None)


@scenario(ITEM, "delete", 403)
def delete_with_register_token(ctx: Ctx):
    return _delete(ctx, ctx.make_machine(status=Machine.Status.UNREACHABLE).pk, ctx.register_token)


@scenario(ITEM, "delete", 404)
def delete_unknown_id(ctx: Ctx):
    return _delete(ctx, 999999, ctx.api_token)


@scenario(ITEM, "delete", 409)
def delete_active_machine(ctx: Ctx):
    return _delete(ctx, ctx.make_machine(status=Machine.Status.ACTIVE).pk, ctx.api_token)


# GET /api/machines


DOCS_YAML, DOCS_JSON, DOCS_PAGE = "/api/openapi.yaml", "/api/openapi.json", "/api/docs"


@scenario(DOCS_YAML, "get", 200)
def openapi_document_as_yaml(ctx: Ctx):
    return ctx.get(DOCS_YAML)


@scenario(DOCS_JSON, "get", 200)
def openapi_document_as_json(ctx: Ctx):
    return ctx.get(DOCS_JSON)


@scenario(DOCS_PAGE, "get", 200)
def api_docs_page(ctx: Ctx):
    return ctx.get(DOCS_PAGE)


@scenario(LIST, "get", 200)
def list_with_api_token(ctx: Ctx):
    ctx.make_machine(status=Machine.Status.UNREACHABLE, last_seen_at=timezone.now())
    ctx.make_machine(ip_address="fd00::1", vni=None, extra_data={"k": "v"})
    return ctx.get(LIST, ctx.api_token)


@scenario(LIST, "get", 200)
def list_filtered_and_paged_with_session(ctx: Ctx):
    for n in range(5):
        ctx.make_machine(hostname=f"web-{n}", status=Machine.Status.ACTIVE)
    ctx.login()
    return ctx.get(LIST, status="active", q=" WEB- ", page=2, page_size=2)


@scenario(LIST, "get", 200)
def list_page_past_the_end(ctx: Ctx):
    ctx.make_machine()
    return ctx.get(LIST, ctx.api_token, page=50, page_size=500)


@scenario(LIST, "get", 400)
def list_bad_query(ctx: Ctx):
    return ctx.get(LIST, ctx.api_token, status="gone", page="0", page_size="501")


@scenario(LIST, "get", 400)
def list_bad_page(ctx: Ctx):
    return ctx.get(LIST, ctx.api_token, page="two")


@scenario(LIST, "get", 401)
def list_without_credentials(ctx: Ctx):
    return ctx.get(LIST)


@scenario(LIST, "get", 401)
def list_with_unknown_token(ctx: Ctx):
    return ctx.get(LIST, "vxm_not-a-real-token")


@scenario(LIST, "get", 403)
def list_with_register_token(ctx: Ctx):
    return ctx.get(LIST, ctx.register_token)


# GET /api/machines/{key}/history


def _ping(machine: Machine, at, ok: bool) -> None:
    PingResult.objects.create(machine=machine, checked_at=at, ok=ok, rtt_ms=0.5 if ok else None,
                              loss=0.0 if ok else 1.0, failure="" if ok else "unreachable")


@scenario(HISTORY, "get", 200)
def history_raw_with_api_token(ctx: Ctx):
    machine = ctx.make_machine(status=Machine.Status.ACTIVE)
    now = timezone.now()
    _ping(machine, now - timedelta(minutes=2), False)
    _ping(machine, now - timedelta(minutes=1), True)
    return ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token, resolution="raw")


@scenario(HISTORY, "get", 200)
def history_hours_with_session(ctx: Ctx):
    machine = ctx.make_machine()
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    HourlyBucket.objects.create(machine=machine, start=start, checks=60, answered=58, loss_sum=2.0, rtt_min=0.2,
                                rtt_sum=29.0, rtt_max=3.1, unreachable_seconds=0)
    HourlyBucket.objects.create(machine=machine, start=start + timedelta(hours=1), checks=3, answered=0,
                                loss_sum=3.0, unreachable_seconds=3600)
    ctx.login()
    return ctx.get(f"/api/machines/{machine.pk}/history")


@scenario(HISTORY, "get", 200)
def history_days_in_a_range(ctx: Ctx):
    machine = ctx.make_machine()
    for day in (1, 2):
        DailyBucket.objects.create(machine=machine, start=f"2026-03-0{day}T00:00:00Z", checks=1440, answered=1440,
                                   loss_sum=0.0, rtt_min=0.1, rtt_sum=288.0, rtt_max=1.0)
    return ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token, resolution="day",
                   since="2026-03-01T09:00:00+09:00", until="2026-04-01T00:00:00Z")


@scenario(HISTORY, "get", 400)
def history_bad_query(ctx: Ctx):
    machine = ctx.make_machine()
    return ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token, resolution="minute", since="yesterday")


@scenario(HISTORY, "get", 400)
def history_range_too_long(ctx: Ctx):
    machine = ctx.make_machine()
    return ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token, resolution="raw",
                   since="2026-03-01T00:00:00Z", until="2026-03-04T00:00:00Z")


@scenario(HISTORY, "get", 400)
def history_range_backwards(ctx: Ctx):
    machine = ctx.make_machine()
    return ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token,
                   since="2026-03-04T00:00:00Z", until="2026-03-01T00:00:00Z")


@scenario(HISTORY, "get", 401)
def history_without_credentials(ctx: Ctx):
    return ctx.get(f"/api/machines/{ctx.make_machine().pk}/history")


@scenario(HISTORY, "get", 403)
def history_with_register_token(ctx: Ctx):
    return ctx.get(f"/api/machines/{ctx.make_machine().pk}/history", ctx.register_token)


@scenario(HISTORY, "get", 404)
def history_unknown_id(ctx: Ctx):
    return ctx.get("/api/machines/999999/history", ctx.api_token)


# /api/silences and /api/silences/{key}


def _silence(ends_in: timedelta = timedelta(hours=1), **fields) -> Silence:
    return Silence.objects.create(ends_at=timezone.now() + ends_in, reason=fields.pop("reason", "maintenance"),
                                  **fields)


def _soon(hours: float = 2) -> str:
    return (timezone.now() + timedelta(hours=hours)).replace(microsecond=0).isoformat()


@scenario(SILENCES, "get", 200)
def silences_active_with_api_token(ctx: Ctx):
    _silence(machine=ctx.make_machine(), created_by="alice")
    _silence(timedelta(days=3), vni=4242)
    _silence(timedelta(minutes=5))
    _silence(timedelta(hours=-1))
    return ctx.get(SILENCES, ctx.api_token)


@scenario(SILENCES, "get", 200)
def silences_all_with_session(ctx: Ctx):
    _silence(timedelta(hours=-1), reason="over")
    ctx.login()
    return ctx.get(SILENCES, all="1")


@scenario(SILENCES, "get", 200)
def silences_none(ctx: Ctx):
    return ctx.get(SILENCES, ctx.api_token, all="false")


@scenario(SILENCES, "get", 400)
def silences_bad_all(ctx: Ctx):
    return ctx.get(SILENCES, ctx.api_token, all="maybe")


@scenario(SILENCES, "get", 401)
def silences_without_credentials(ctx: Ctx):
    return ctx.get(SILENCES)


@scenario(SILENCES, "get", 403)
def silences_with_register_token(ctx: Ctx):
    return ctx.get(SILENCES, ctx.register_token)


@scenario(SILENCES, "post", 201)
def silence_a_machine_for_a_duration(ctx: Ctx):
    machine = ctx.make_machine()
    return ctx.send("post", SILENCES, ctx.api_token, {"machine": machine.pk, "duration": 7200, "reason": "CHG-1"})


@scenario(SILENCES, "post", 201)
def silence_a_vni_until(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token,
                    {"vni": 100, "machine": None, "ends_at": _soon(), "reason": "switch firmware"})


@scenario(SILENCES, "post", 201)
def silence_everything(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token, {"duration": 60, "reason": "moving the manager"})


@scenario(SILENCES, "post", 400)
def silence_every_field_bad(ctx: Ctx):
    body = {"machine": 999999, "vni": 5, "ends_at": "yesterday", "duration": 0, "reason": " ", "until": "x"}
    return ctx.send("post", SILENCES, ctx.api_token, body)


@scenario(SILENCES, "post", 400)
def silence_bad_values(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token, {"machine": 999999, "ends_at": "2001-01-01T00:00:00Z"})


@scenario(SILENCES, "post", 400)
def silence_malformed_json(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token, '{"reason": ')


@scenario(SILENCES, "post", 401)
def silence_without_token(ctx: Ctx):
    return ctx.send("post", SILENCES, None, {"duration": 60, "reason": "r"})


@scenario(SILENCES, "post", 401)
def silence_with_session_only(ctx: Ctx):
    ctx.login()
    return ctx.send("post", SILENCES, None, {"duration": 60, "reason": "r"})


@scenario(SILENCES, "post", 403)
def silence_with_register_token(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.register_token, {"duration": 60, "reason": "r"})


@scenario(SILENCES, "post", 413)
def silence_body_over_16_kib(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token, {"duration": 60, "reason": "x" * 17 * 1024})


@scenario(SILENCES, "post", 415)
def silence_text_plain(ctx: Ctx):
    return ctx.send("post", SILENCES, ctx.api_token, '{"duration": 60, "reason": "r"}', content_type="text/plain")


@scenario(SILENCE, "get", 200)
def silence_with_api_token(ctx: Ctx):
    return ctx.get(f"/api/silences/{_silence(machine=ctx.make_machine()).pk}", ctx.api_token)


@scenario(SILENCE, "get", 200)
def silence_ended_with_session(ctx: Ctx):
    silence = _silence(timedelta(minutes=-5), vni=0)
    ctx.login()
    return ctx.get(f"/api/silences/{silence.pk}")


@scenario(SILENCE, "get", 401)
def silence_get_without_credentials(ctx: Ctx):
    return ctx.get(f"/api/silences/{_silence().pk}")


@scenario(SILENCE, "get", 403)
def silence_get_with_register_token(ctx: Ctx):
    return ctx.get(f"/api/silences/{_silence().pk}", ctx.register_token)


@scenario(SILENCE, "get", 404)
def silence_unknown_id(ctx: Ctx):
    return ctx.get("/api/silences/999999", ctx.api_token)


@scenario(SILENCE, "patch", 200)
def silence_extended(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.api_token, {"ends_at": _soon(30)})


@scenario(SILENCE, "patch", 200)
def silence_reworded_and_shortened(ctx: Ctx):
    body = {"duration": 600, "reason": "took less"}
    return ctx.send("patch", f"/api/silences/{_silence(vni=7).pk}", ctx.api_token, body)


@scenario(SILENCE, "patch", 400)
def silence_change_nothing(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.api_token, {})


@scenario(SILENCE, "patch", 400)
def silence_change_scope_and_bad_end(ctx: Ctx):
    body = {"machine": 1, "ends_at": "2001-01-01T00:00:00Z", "duration": 60}
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.api_token, body)


@scenario(SILENCE, "patch", 401)
def silence_change_without_token(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", None, {"reason": "r"})


@scenario(SILENCE, "patch", 403)
def silence_change_with_register_token(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.register_token, {"reason": "r"})


@scenario(SILENCE, "patch", 404)
def silence_change_unknown_id(ctx: Ctx):
    return ctx.send("patch", "/api/silences/999999", ctx.api_token, {"reason": "r"})


@scenario(SILENCE, "patch", 409)
def silence_change_after_its_end(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence(timedelta(minutes=-1)).pk}", ctx.api_token, {"duration": 60})


@scenario(SILENCE, "patch", 413)
def silence_change_body_over_16_kib(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.api_token, {"reason": "x" * 17 * 1024})


@scenario(SILENCE, "patch", 415)
def silence_change_text_plain(ctx: Ctx):
    return ctx.send("patch", f"/api/silences/{_silence().pk}", ctx.api_token, '{"reason": "r"}',
                    content_type="text/plain")


@scenario(SILENCE, "delete", 200)
def silence_ended_now(ctx: Ctx):
    return ctx.send("delete", f"/api/silences/{_silence(machine=ctx.make_machine()).pk}", ctx.api_token)


@scenario(SILENCE, "delete", 200)
def silence_ended_already(ctx: Ctx):
    return ctx.send("delete", f"/api/silences/{_silence(timedelta(hours=-2)).pk}", ctx.api_token)


@scenario(SILENCE, "delete", 401)
def silence_end_without_token(ctx: Ctx):
    return ctx.send("delete", f"/api/silences/{_silence().pk}", None)


@scenario(SILENCE, "delete", 403)
def silence_end_with_register_token(ctx: Ctx):
    return ctx.send("delete", f"/api/silences/{_silence().pk}", ctx.register_token)


@scenario(SILENCE, "delete", 404)
def silence_end_unknown_id(ctx: Ctx):
    return ctx.send("delete", "/api/silences/999999", ctx.api_token)


# GET /health


@scenario(HEALTH, "get", 200)
def health_ok(ctx: Ctx):
    return ctx.get(HEALTH)


@scenario(HEALTH, "get", 503)
def health_dead_channel_layer(ctx: Ctx):
    ctx.settings.CHANNEL_LAYERS = DEAD_REDIS
    channel_layers.backends.clear()
    return ctx.get(HEALTH)


# ---------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture
def fresh_channel_layers():
    # Channels caches layer instances; a scenario that points the layer elsewhere must not leak it.
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def ctx(client, settings, register_token, api_token, make_machine, django_user_model, fresh_channel_layers) -> Ctx:
    settings.LANGUAGE_CODE = "en"
    return Ctx(client, settings, register_token, api_token, make_machine, django_user_model)


def test_the_spec_is_valid_openapi():
    validate_spec(spec_dict())
    assert openapi().version is not None


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_real_response_matches_the_spec(name, ctx):
    expected = SCENARIOS[name]
    response = expected.run(ctx)
    assert response.status_code == expected.status, response.content
    request = Request(response.wsgi_request)
    assert (request.path_pattern, request.method) == (expected.path, expected.method)
    openapi().validate_response(request, DjangoOpenAPIResponse(response))


def test_every_documented_response_is_produced_by_a_scenario():
    exercised = {(s.path, s.method, s.status) for s in SCENARIOS.values()}
    assert sorted(documented() - exercised) == [], "documented but never produced by a test"
    assert sorted(exercised - documented()) == [], "produced by a test but not documented"


def _routes(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def _as_openapi_path(route: str) -> str:
    return "/" + DjangoOpenAPIRequest.path_regex.sub(r"{\1}", route).lstrip("^").rstrip("$")


def test_every_api_url_is_documented():
    api_paths = {_as_openapi_path(route) for route in _routes(get_resolver().url_patterns) if route.startswith("api/")}
    assert api_paths, "no URL pattern under /api/ found"
    assert sorted(api_paths - set(spec_dict()["paths"])) == []


def test_every_documented_path_is_routed_as_documented():
    for path in spec_dict()["paths"]:
        match = resolve(path.replace("{key}", "1"))
        assert _as_openapi_path(match.route) == path


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "url"),
    [(LIST, "/api/machines"), (ITEM, "/api/machines/1"), (HISTORY, "/api/machines/1/history"),
     (SILENCES, "/api/silences"), (SILENCE, "/api/silences/1")],
    ids=["list", "item", "history", "silences", "silence"],
)
def test_undocumented_methods_on_api_paths_are_refused(client, api_token, make_machine, path, url):
    # A method added to the server (say DELETE) fails here until the spec documents it.
    make_machine()
    operations = set(spec_dict()["paths"][path]) & set(HTTP_METHODS)
    for method in sorted({"get", "put", "post", "patch", "delete"} - operations):
        response = getattr(client, method)(url, HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code == 405, (method, response.status_code)


# The request schemas: each valid example below is accepted by both the spec and the server, each invalid
# one refused by both. (The server is more lenient than the spec in a few ways, e.g. surrounding whitespace
# or an empty `status` filter, and stricter in others the schema cannot express, e.g. multicast addresses
# in the path; those are described in the spec's text and not listed here.)

VALID_BODIES = {
    "canonical": BODY,
    "dash_mac_no_vni": {"hostname": "a", "mac_address": "02-00-00-00-00-0A"},
    "cisco_mac": {"hostname": "a.b.c", "mac_address": "0200.0000.000b", "vni": 0},
    "nulls": {"hostname": "UPPER-case", "mac_address": "02:00:00:00:00:0c", "vni": None, "extra_data": None},
    "trailing_dot": {"hostname": "host.example.", "mac_address": "02:00:00:00:00:0d", "vni": 2**24 - 1},
    "longest_name": {"hostname": ".".join(["a" * 63] * 3 + ["b" * 61]), "mac_address": "02:00:00:00:00:0e"},
    "longest_label": {"hostname": "x" * 63, "mac_address": "02:00:00:00:00:0f", "extra_data": {"n": [1, 2]}},
}
INVALID_BODIES = {
    "not_an_object": [BODY],
    "no_hostname": {"mac_address": "02:00:00:00:00:01"},
    "no_mac": {"hostname": "a"},
    "empty_hostname": {"hostname": "", "mac_address": "02:00:00:00:00:01"},
    "underscore": {"hostname": "a_b", "mac_address": "02:00:00:00:00:01"},
    "leading_hyphen": {"hostname": "-a", "mac_address": "02:00:00:00:00:01"},
    "trailing_hyphen": {"hostname": "a-.b", "mac_address": "02:00:00:00:00:01"},
    "double_dot": {"hostname": "a..b", "mac_address": "02:00:00:00:00:01"},
    "label_64": {"hostname": "x" * 64, "mac_address": "02:00:00:00:00:01"},
    "name_254": {"hostname": ".".join(["a" * 63] * 3 + ["b" * 62]), "mac_address": "02:00:00:00:00:01"},
    "non_ascii": {"hostname": "höst", "mac_address": "02:00:00:00:00:01"},
    "hostname_number": {"hostname": 5, "mac_address": "02:00:00:00:00:01"},
    "zero_mac": {"hostname": "a", "mac_address": "00:00:00:00:00:00"},
    "zero_mac_cisco": {"hostname": "a", "mac_address": "0000.0000.0000"},
    "broadcast_mac": {"hostname": "a", "mac_address": "FF-FF-FF-FF-FF-FF"},
    "multicast_mac": {"hostname": "a", "mac_address": "01:00:5e:00:00:01"},
    "mixed_separators": {"hostname": "a", "mac_address": "02:00-00:00:00:01"},
    "short_mac": {"hostname": "a", "mac_address": "02:00:00:00:01"},
    "negative_vni": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "vni": -1},
    "vni_too_big": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "vni": 2**24},
    "vni_string": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "vni": "5"},
    "vni_bool": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "vni": True},
    "extra_list": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "extra_data": [1]},
    "unknown_field": {"hostname": "a", "mac_address": "02:00:00:00:00:01", "ip_address": SOURCE},
}


def _spec_accepts(response: HttpResponse) -> bool:
    errors = list(openapi().iter_request_errors(Request(response.wsgi_request)))
    return not errors


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(VALID_BODIES))
def test_a_body_the_spec_accepts_registers(name, ctx):
    response = ctx.put(SOURCE, ctx.register_token, VALID_BODIES[name])
    assert _spec_accepts(response)
    assert response.status_code == 201, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(INVALID_BODIES))
def test_a_body_the_spec_refuses_is_refused(name, ctx):
    response = ctx.put(SOURCE, ctx.register_token, INVALID_BODIES[name])
    assert not _spec_accepts(response)
    assert response.status_code == 400, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.2", "fd00::ffff:1"])
def test_an_address_the_spec_accepts_registers(address, ctx):
    response = ctx.put(address, ctx.api_token)
    assert _spec_accepts(response)
    assert response.status_code == 201, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["host", "10.0.0.256", "10.0.0", "2001:db8:::1", "1" * 46])
def test_an_address_the_spec_refuses_is_refused(address, ctx):
    response = ctx.put(address, ctx.api_token)
    assert not _spec_accepts(response)
    assert response.status_code == 400, response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ({}, True),
        ({"status": "pending", "page": "3", "page_size": "500", "q": "web"}, True),
        ({"page_size": "1"}, True),
        ({"status": "deleted"}, False),
        ({"page": "0"}, False),
        ({"page": "-1"}, False),
        ({"page": "1.5"}, False),
        ({"page_size": "0"}, False),
        ({"page_size": "501"}, False),
        ({"page_size": "many"}, False),
    ],
)
def test_list_queries_the_spec_accepts_are_answered(params, valid, ctx):
    response = ctx.get(LIST, ctx.api_token, **params)
    assert _spec_accepts(response) is valid
    assert response.status_code == (200 if valid else 400), response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "valid"),
    [
        ({}, True),
        ({"resolution": "raw"}, True),
        ({"resolution": "day", "since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00+09:00"}, True),
        ({"until": "2026-03-01T12:34:56.789Z"}, True),
        ({"resolution": "minute"}, False),
        ({"resolution": "RAW"}, False),
        ({"since": "last week"}, False),
        ({"until": "2026-02-30T00:00:00Z"}, False),
    ],
)
def test_history_queries_the_spec_accepts_are_answered(params, valid, ctx):
    # The spec cannot say how long a range may be, nor that since comes before until: its text does.
    machine = ctx.make_machine()
    response = ctx.get(f"/api/machines/{machine.pk}/history", ctx.api_token, **params)
    assert _spec_accepts(response) is valid
    assert response.status_code == (200 if valid else 400), response.content


# Silence bodies, as for registrations: accepted by both the spec and the server, or refused by both. (The spec
# cannot say that a machine must exist or an end lie ahead: those are in its text.)

VALID_SILENCES = {
    "duration": {"duration": 60, "reason": "r"},
    "ends_at_utc": {"ends_at": "{soon}Z", "reason": "CHG-1"},
    "ends_at_offset": {"ends_at": "{soon_tokyo}.5+09:00", "reason": " padded ", "vni": 0},
    "nulls": {"machine": None, "vni": None, "duration": 7776000, "reason": "x" * 500},
    "vni": {"machine": None, "vni": 2**24 - 1, "duration": 1, "reason": "日本語"},
}
INVALID_SILENCES = {
    "not_an_object": [{"duration": 60, "reason": "r"}],
    "no_reason": {"duration": 60},
    "blank_reason": {"duration": 60, "reason": " \t"},
    "long_reason": {"duration": 60, "reason": "x" * 501},
    "nul_reason": {"duration": 60, "reason": "a\x00b"},
    "no_end": {"reason": "r"},
    "both_ends": {"duration": 60, "ends_at": "{soon}Z", "reason": "r"},
    "null_end": {"ends_at": None, "reason": "r"},
    "no_seconds": {"ends_at": "{soon_minutes}Z", "reason": "r"},
    "no_offset": {"ends_at": "{soon}", "reason": "r"},
    "space_separated": {"ends_at": "{soon_space}Z", "reason": "r"},
    "duration_zero": {"duration": 0, "reason": "r"},
    "duration_too_long": {"duration": 7776001, "reason": "r"},
    "duration_string": {"duration": "60", "reason": "r"},
    "machine_and_vni": {"machine": 1, "vni": 1, "duration": 60, "reason": "r"},
    "machine_zero": {"machine": 0, "duration": 60, "reason": "r"},
    "vni_too_big": {"vni": 2**24, "duration": 60, "reason": "r"},
    "unknown_field": {"duration": 60, "reason": "r", "starts_at": "{soon}Z"},
}


def _silence_body(body):
    soon = (timezone.now() + timedelta(hours=3)).replace(microsecond=0, tzinfo=None)
    values = {"soon": soon.isoformat(), "soon_minutes": soon.isoformat(timespec="minutes"),
              "soon_space": soon.isoformat(" "), "soon_tokyo": (soon + timedelta(hours=9)).isoformat()}
    if isinstance(body, dict):
        return {key: value.format(**values) if isinstance(value, str) and "{" in value else value
                for key, value in body.items()}
    return body


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(VALID_SILENCES))
def test_a_silence_the_spec_accepts_is_created(name, ctx):
    response = ctx.send("post", SILENCES, ctx.api_token, _silence_body(VALID_SILENCES[name]))
    assert _spec_accepts(response)
    assert response.status_code == 201, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(INVALID_SILENCES))
def test_a_silence_the_spec_refuses_is_refused(name, ctx):
    ctx.make_machine()
    response = ctx.send("post", SILENCES, ctx.api_token, _silence_body(INVALID_SILENCES[name]))
    assert not _spec_accepts(response)
    assert response.status_code == 400, response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"reason": "r"}, True),
        ({"duration": 60}, True),
        ({"ends_at": "{soon}Z", "reason": "r"}, True),
        ({}, False),
        ({"duration": 60, "ends_at": "{soon}Z"}, False),
        ({"vni": 5}, False),
        ({"reason": ""}, False),
    ],
)
def test_silence_changes_the_spec_accepts_are_made(body, valid, ctx):
    silence = _silence()
    response = ctx.send("patch", f"/api/silences/{silence.pk}", ctx.api_token, _silence_body(body))
    assert _spec_accepts(response) is valid
    assert response.status_code == (200 if valid else 400), response.content


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "valid"), [("1", True), ("0", True), ("true", True), ("TRUE", False), ("", False)])
def test_silence_list_queries_the_spec_accepts_are_answered(value, valid, ctx):
    response = ctx.get(SILENCES, ctx.api_token, all=value)
    assert _spec_accepts(response) is valid
    assert response.status_code == (200 if valid else 400), response.content
