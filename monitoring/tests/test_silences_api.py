"""/api/silences: list, create, read, extend and end silences with an API token; every refusal names its field."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from machines.models import Machine
from monitoring.alerts import chores, outbox
from monitoring.models import AlertKind, Channel, Notification, Silence

pytestmark = pytest.mark.django_db

LIST = "/api/silences"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _send(client, method: str, path: str, token: str | None, body=None, content_type="application/json", **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type=content_type, **headers, **extra)


def _post(client, token, body, **extra):
    return _send(client, "post", LIST, token, body, **extra)


def _get(client, path=LIST, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(path, params, **headers)


def _silence(ends_in=timedelta(hours=1), **fields) -> Silence:
    now = timezone.now()
    return Silence.objects.create(ends_at=now + ends_in, reason=fields.pop("reason", "maintenance"), **fields)


class TestCreate:
    def test_a_silence_for_a_machine_until_a_time(self, client, api_token, make_machine):
        machine = make_machine()
        ends_at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
        response = _post(client, api_token, {"machine": machine.pk, "ends_at": _iso(ends_at), "reason": " CHG-42 "})
        assert response.status_code == 201, response.content
        body = response.json()
        silence = Silence.objects.get()
        assert response["Location"] == f"/api/silences/{silence.pk}"
        assert body == {
            "id": silence.pk, "scope": "machine", "machine": machine.pk, "vni": None,
            "starts_at": _iso(silence.starts_at), "ends_at": _iso(ends_at), "active": True, "reason": "CHG-42",
            "created_by": "API token test api", "created_at": _iso(silence.created_at),
        }
        # It works: the machine's alerts are no longer written.
        Channel.objects.create(name="ops", url="json://127.0.0.1:9/")
        assert outbox.write(AlertKind.UNREACHABLE, outbox.Subject.of(machine)) == 0
        assert outbox.write(AlertKind.UNREACHABLE, outbox.Subject.of(make_machine())) == 1

    def test_a_silence_for_a_vni_for_a_duration(self, client, api_token):
        before = timezone.now()
        response = _post(client, api_token, {"vni": 4242, "duration": 3600, "reason": "switch firmware"})
        assert response.status_code == 201, response.content
        silence = Silence.objects.get()
        assert (silence.machine_id, silence.vni) == (None, 4242)
        assert before + timedelta(hours=1) <= silence.ends_at <= timezone.now() + timedelta(hours=1)
        assert response.json()["scope"] == "vni"

    def test_neither_machine_nor_vni_silences_everything(self, client, api_token):
        response = _post(client, api_token, {"machine": None, "vni": None, "duration": 60, "reason": "moving"})
        assert response.status_code == 201, response.content
        assert response.json()["scope"] == "everything"
        assert Silence.objects.get().covers(12345, 7)

    def test_an_ends_at_with_an_offset_is_understood(self, client, api_token):
        ends_at = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
        local = ends_at.astimezone(timezone.get_fixed_timezone(9 * 60)).isoformat()
        response = _post(client, api_token, {"ends_at": local, "reason": "r"})
        assert response.status_code == 201, response.content
        assert Silence.objects.get().ends_at == ends_at


class TestValidation:
    @pytest.mark.parametrize(
        ("body", "errors"),
        [
            ({"machine": 1, "vni": 5, "duration": 60, "reason": "r"}, {"vni"}),
            ({"machine": 999999, "duration": 60, "reason": "r"}, {"machine"}),
            ({"machine": True, "duration": 60, "reason": "r"}, {"machine"}),
            ({"machine": "1", "duration": 60, "reason": "r"}, {"machine"}),
            ({"machine": 2**70, "duration": 60, "reason": "r"}, {"machine"}),
            ({"vni": 2**24, "duration": 60, "reason": "r"}, {"vni"}),
            ({"vni": -1, "duration": 60, "reason": "r"}, {"vni"}),
            ({"reason": "r"}, {"ends_at"}),
            ({"ends_at": "2030-01-01T00:00:00Z", "duration": 60, "reason": "r"}, {"duration"}),
            ({"ends_at": "2000-01-01T00:00:00Z", "reason": "r"}, {"ends_at"}),
            ({"ends_at": "2026-02-30T00:00:00Z", "reason": "r"}, {"ends_at"}),
            ({"ends_at": "tomorrow", "reason": "r"}, {"ends_at"}),
            ({"ends_at": 1700000000, "reason": "r"}, {"ends_at"}),
            ({"ends_at": None, "reason": "r"}, {"ends_at"}),
            ({"ends_at": "2026-06-01T12:00Z", "reason": "r"}, {"ends_at"}),
            ({"ends_at": "2026-06-01T12:00:00", "reason": "r"}, {"ends_at"}),
            ({"ends_at": "2026-06-01 12:00:00Z", "reason": "r"}, {"ends_at"}),
            ({"duration": None, "reason": "r"}, {"duration"}),
            ({"duration": 0, "reason": "r"}, {"duration"}),
            ({"duration": 91 * 86400, "reason": "r"}, {"duration"}),
            ({"duration": 1.5, "reason": "r"}, {"duration"}),
            ({"duration": 60}, {"reason"}),
            ({"duration": 60, "reason": "   "}, {"reason"}),
            ({"duration": 60, "reason": "x" * 501}, {"reason"}),
            ({"duration": 60, "reason": "a\x00b"}, {"reason"}),
            ({"duration": 60, "reason": 5}, {"reason"}),
            ({"duration": 60, "reason": "r", "starts_at": "2030-01-01T00:00:00Z"}, {"starts_at"}),
            ([{"duration": 60, "reason": "r"}], {"body"}),
            ({}, {"ends_at", "reason"}),
        ],
    )
    def test_a_bad_body_is_refused_naming_the_field(self, client, api_token, make_machine, body, errors):
        make_machine()
        response = _post(client, api_token, body)
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == errors
        assert not Silence.objects.exists()

    def test_an_end_more_than_90_days_away_is_refused(self, client, api_token):
        far = _iso(timezone.now() + timedelta(days=90, minutes=5))
        response = _post(client, api_token, {"ends_at": far, "reason": "r"})
        assert response.status_code == 400
        assert response.json()["errors"]["ends_at"] == ["At most 90 days from now."]
        assert _post(client, api_token, {"duration": 90 * 86400, "reason": "r"}).status_code == 201

    def test_malformed_json_too_big_and_not_json(self, client, api_token):
        assert _post(client, api_token, '{"reason": ').status_code == 400
        assert _post(client, api_token, {"reason": "x" * 20000, "duration": 60}).status_code == 413
        response = _post(client, api_token, json.dumps({"duration": 60, "reason": "r"}), content_type="text/plain")
        assert response.status_code == 415


class TestAuth:
    def test_writing_needs_an_api_token(self, client, register_token, operator):
        body = {"duration": 60, "reason": "r"}
        missing = _post(client, None, body)
        assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="vxlanmgr"'
        assert _post(client, "vxm_not-a-token", body).status_code == 401
        assert _post(client, register_token, body).status_code == 403
        client.force_login(operator)
        # A dashboard session is not enough: the dashboard has its own page, with CSRF.
        assert _post(client, None, body).status_code == 401
        assert not Silence.objects.exists()

    def test_changing_and_ending_need_an_api_token(self, client, register_token):
        silence = _silence()
        path = f"{LIST}/{silence.pk}"
        assert _send(client, "patch", path, None, {"reason": "x"}).status_code == 401
        assert _send(client, "patch", path, register_token, {"reason": "x"}).status_code == 403
        assert _send(client, "delete", path, None).status_code == 401
        assert _send(client, "delete", path, register_token).status_code == 403
        silence.refresh_from_db()
        assert silence.reason == "maintenance" and silence.ends_at > timezone.now()

    def test_reading_takes_a_token_or_a_signed_in_user(self, api_token, register_token, viewer_client):
        silence = _silence()
        client = Client()  # viewer_client is the suite's one client, signed in
        assert _get(client).status_code == 401
        assert _get(client, token=register_token).status_code == 403
        assert _get(client, f"{LIST}/{silence.pk}", register_token).status_code == 403
        assert _get(client, token=api_token).status_code == 200
        assert _get(viewer_client).json()["count"] == 1
        assert _get(viewer_client, f"{LIST}/{silence.pk}").json()["id"] == silence.pk

    def test_other_methods_are_not_allowed(self, client, api_token):
        silence = _silence()
        put = _send(client, "put", LIST, api_token, {})
        assert put.status_code == 405 and put["Allow"] == "GET, HEAD, POST"
        post = _send(client, "post", f"{LIST}/{silence.pk}", api_token, {})
        assert post.status_code == 405 and post["Allow"] == "GET, HEAD, PATCH, DELETE"


class TestRead:
    def test_the_list_shows_silences_not_over_yet_and_all_shows_every_one(self, client, api_token, make_machine):
        soon = _silence(timedelta(minutes=5), vni=7)
        later = _silence(timedelta(hours=5), machine=make_machine())
        over = _silence(timedelta(hours=-1), reason="done")
        body = _get(client, token=api_token).json()
        assert body["count"] == 2 and [s["id"] for s in body["results"]] == [soon.pk, later.pk]
        every = _get(client, token=api_token, all="1").json()
        assert [s["id"] for s in every["results"]] == [later.pk, soon.pk, over.pk]
        assert every["results"][2]["active"] is False
        assert _get(client, token=api_token, all="true").json()["count"] == 3
        assert _get(client, token=api_token, all="0").json()["count"] == 2

    @pytest.mark.parametrize("value", ["maybe", "", "TRUE", "yes"])
    def test_a_bad_all_is_refused(self, client, api_token, value):
        response = _get(client, token=api_token, all=value)
        assert response.status_code == 400 and set(response.json()["errors"]) == {"all"}

    def test_one_silence(self, client, api_token):
        silence = _silence(vni=9, created_by="alice")
        body = _get(client, f"{LIST}/{silence.pk}", api_token).json()
        assert body["vni"] == 9 and body["created_by"] == "alice" and body["active"] is True

    @pytest.mark.parametrize("key", ["999999", "abc", "1" * 30, "-1"])
    def test_an_unknown_silence_is_404(self, client, api_token, key):
        assert _get(client, f"{LIST}/{key}", api_token).status_code == 404
        assert _send(client, "patch", f"{LIST}/{key}", api_token, {"reason": "x"}).status_code == 404
        assert _send(client, "delete", f"{LIST}/{key}", api_token).status_code == 404


class TestChange:
    def test_extending_and_rewording(self, client, api_token):
        silence = _silence()
        ends_at = (timezone.now() + timedelta(hours=6)).replace(microsecond=0)
        response = _send(client, "patch", f"{LIST}/{silence.pk}", api_token,
                         {"ends_at": _iso(ends_at), "reason": "took longer"})
        assert response.status_code == 200, response.content
        silence.refresh_from_db()
        assert silence.ends_at == ends_at and silence.reason == "took longer"
        assert response.json()["ends_at"] == _iso(ends_at)
        response = _send(client, "patch", f"{LIST}/{silence.pk}", api_token, {"duration": 60})
        assert response.status_code == 200
        silence.refresh_from_db()
        assert silence.ends_at < timezone.now() + timedelta(minutes=2) and silence.reason == "took longer"

    @pytest.mark.parametrize(
        ("body", "errors"),
        [
            ({}, {"body"}),
            ({"machine": 1}, {"machine"}),
            ({"ends_at": "2000-01-01T00:00:00Z"}, {"ends_at"}),
            ({"duration": 60, "ends_at": "2030-01-01T00:00:00Z"}, {"duration"}),
            ({"reason": ""}, {"reason"}),
        ],
    )
    def test_a_bad_change_is_refused(self, client, api_token, body, errors):
        silence = _silence()
        response = _send(client, "patch", f"{LIST}/{silence.pk}", api_token, body)
        assert response.status_code == 400, response.content
        assert set(response.json()["errors"]) == errors

    def test_an_ended_silence_cannot_change(self, client, api_token):
        silence = _silence(timedelta(minutes=-1))
        response = _send(client, "patch", f"{LIST}/{silence.pk}", api_token, {"duration": 3600})
        assert response.status_code == 409

    def test_ending_announces_what_is_still_unreachable(self, client, api_token, make_machine):
        down = make_machine(status=Machine.Status.UNREACHABLE, unreachable_since=timezone.now())
        make_machine(status=Machine.Status.ACTIVE)
        silence = _silence(timedelta(hours=2))
        Channel.objects.create(name="ops", url="json://127.0.0.1:9/")
        response = _send(client, "delete", f"{LIST}/{silence.pk}", api_token)
        assert response.status_code == 200, response.content
        assert response.json()["active"] is False
        silence.refresh_from_db()
        assert silence.ends_at <= timezone.now()
        # Ending again changes nothing.
        assert _send(client, "delete", f"{LIST}/{silence.pk}", api_token).json()["ends_at"] == _iso(silence.ends_at)
        assert _get(client, token=api_token).json()["count"] == 0
        # The delivery worker's chores then announce the machine still down, once.
        assert chores.conclude_silences() == 1
        assert list(Notification.objects.values_list("kind", "machine_id")) == [
            (AlertKind.STILL_UNREACHABLE, down.pk)
        ]
        assert chores.conclude_silences() == 0
