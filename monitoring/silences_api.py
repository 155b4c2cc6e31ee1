"""/api/silences: list, create, extend and end silences (maintenance windows) with an API token (docs/openapi.yaml).

Reading takes what reading the inventory takes (an API token, or a dashboard session); changing takes an API
token, whose name is recorded as the silence's author.
"""

import re
from datetime import timedelta

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from machines.api import _read_json, _unauthorized, method_not_allowed, reader_refusal
from machines.http import json_error, json_field_errors
from machines.models import ApiToken, Machine
from machines.tokens import authenticate
from machines.validation import MAX_VNI

from .alerts import silences
from .api import _iso
from .models import Silence

NEW_FIELDS = {"machine", "vni", "ends_at", "duration", "reason"}
CHANGE_FIELDS = {"ends_at", "duration", "reason"}
MAX_DURATION = int(silences.MAX_LENGTH.total_seconds())
_TRUE, _FALSE = {"1", "true"}, {"0", "false"}
# A date and time as JSON Schema's date-time format has it (RFC 3339): seconds and a UTC offset required.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


class Invalid(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors


def describe(silence: Silence, now=None) -> dict:
    now = now or timezone.now()
    scope = "machine" if silence.machine_id is not None else "vni" if silence.vni is not None else "everything"
    return {
        "id": silence.pk,
        "scope": scope,
        "machine": silence.machine_id,
        "vni": silence.vni,
        "starts_at": _iso(silence.starts_at),
        "ends_at": _iso(silence.ends_at),
        "active": silence.starts_at <= now < silence.ends_at,
        "reason": silence.reason,
        "created_by": silence.created_by,
        "created_at": _iso(silence.created_at),
    }


def _writer(request: HttpRequest) -> ApiToken | JsonResponse:
    token = authenticate(request.META.get("HTTP_AUTHORIZATION", ""))
    if token is None:
        return _unauthorized(request)
    if token.scope != ApiToken.Scope.API:
        return json_error(403, _("Changing silences needs an API token."))
    return token


def _whole_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _end(payload: dict, errors: dict[str, list[str]], required: bool):
    """The end a body asks for, by `ends_at` or `duration` (seconds from now), or None; errors added."""
    has_end, has_duration = "ends_at" in payload, "duration" in payload
    if has_end and has_duration:
        errors["duration"] = [_("Give ends_at or duration, not both.")]
        return None
    if not (has_end or has_duration):
        if required:
            errors["ends_at"] = [_("Give ends_at (a date and time) or duration (seconds from now).")]
        return None
    now = timezone.now()
    if has_duration:
        duration = payload["duration"]
        if not _whole_number(duration) or not 1 <= duration <= MAX_DURATION:
            errors["duration"] = [_("Must be a whole number of seconds from 1 to %(max)d.") % {"max": MAX_DURATION}]
            return None
        return now + timedelta(seconds=duration)
    raw = payload["ends_at"]
    try:
        ends_at = parse_datetime(raw.upper()) if isinstance(raw, str) and _RFC3339.fullmatch(raw) else None
    except ValueError:
        ends_at = None
    if ends_at is None:
        errors["ends_at"] = [_("Not an ISO 8601 date and time with a time zone, e.g. 2026-06-01T12:00:00Z.")]
        return None
    refusal = silences.end_refusal(ends_at, now)
    if refusal:
        errors["ends_at"] = [refusal]
        return None
    return ends_at


def _reason(payload: dict, errors: dict[str, list[str]], required: bool) -> str | None:
    if "reason" not in payload and not required:
        return None
    reason = payload.get("reason")
    if not isinstance(reason, str):
        errors["reason"] = [_("Required: a text saying why.")]
        return None
    refusal = silences.reason_refusal(reason)
    if refusal:
        errors["reason"] = [refusal]
        return None
    return reason


def _object(payload: object, allowed: set[str]) -> dict:
    if not isinstance(payload, dict):
        raise Invalid({"body": [_("Send a JSON object.")]})
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise Invalid({name[:64]: [_("Unknown field.")] for name in unknown})
    return payload


def parse_new(payload: object) -> dict:
    payload = _object(payload, NEW_FIELDS)
    errors: dict[str, list[str]] = {}
    machine = None
    machine_id, vni = payload.get("machine"), payload.get("vni")
    if machine_id is not None and vni is not None:
        errors["vni"] = [_("Give a machine or a VNI, not both; neither silences everything.")]
    elif machine_id is not None:
        if not _whole_number(machine_id) or machine_id < 1:
            errors["machine"] = [_("Must be a machine's id.")]
        else:
            machine = Machine.objects.filter(pk=machine_id).first() if machine_id < 2**63 else None
            if machine is None:
                errors["machine"] = [_("No machine with id %(id)s.") % {"id": machine_id}]
    elif vni is not None and (not _whole_number(vni) or not 0 <= vni <= MAX_VNI):
        errors["vni"] = [_("The VNI must be a whole number from 0 to %(max)d.") % {"max": MAX_VNI}]
    ends_at = _end(payload, errors, required=True)
    reason = _reason(payload, errors, required=True)
    if errors:
        raise Invalid(errors)
    return {"machine": machine, "vni": vni if machine_id is None else None, "ends_at": ends_at, "reason": reason}


def parse_change(payload: object) -> dict:
    payload = _object(payload, CHANGE_FIELDS)
    errors: dict[str, list[str]] = {}
    ends_at = _end(payload, errors, required=False)
    reason = _reason(payload, errors, required=False)
    if not errors and ends_at is None and reason is None:
        errors["body"] = [_("Give a new ends_at or duration, a new reason, or both.")]
    if errors:
        raise Invalid(errors)
    return {"ends_at": ends_at, "reason": reason}


def _list(request: HttpRequest) -> HttpResponse:
    denied = reader_refusal(request)
    if denied:
        return denied
    everything = request.GET.get("all", "0")
    if everything not in _TRUE | _FALSE:
        return json_field_errors({"all": [_("Must be 1 or 0 (true or false).")]})
    now = timezone.now()
    found = silences.recent()[: silences.MAX_LISTED] if everything in _TRUE else silences.active(now)
    results = [describe(silence, now) for silence in found]
    return JsonResponse({"count": len(results), "results": results})


def _create(request: HttpRequest) -> HttpResponse:
    token = _writer(request)
    if isinstance(token, HttpResponse):
        return token
    payload = _read_json(request)
    if isinstance(payload, HttpResponse):
        return payload
    try:
        fields = parse_new(payload)
    except Invalid as exc:
        return json_field_errors(exc.errors)
    silence = silences.create(**fields, by=f"API token {token.name}")
    response = JsonResponse(describe(silence), status=201)
    response["Location"] = reverse("monitoring-api-silence", args=[silence.pk])
    return response


@csrf_exempt
def silence_list(request: HttpRequest) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        return _list(request)
    if request.method == "POST":
        return _create(request)
    return method_not_allowed("GET, HEAD, POST")


def _find(key: str) -> Silence | None:
    if not (key.isascii() and key.isdigit()) or len(key) > 18:
        return None
    return Silence.objects.filter(pk=int(key)).first()


def _no_such_silence(key: str) -> JsonResponse:
    return json_error(404, _("No silence with id %(id)s.") % {"id": key[:40]})


def _change(request: HttpRequest, key: str) -> HttpResponse:
    token = _writer(request)
    if isinstance(token, HttpResponse):
        return token
    silence = _find(key)
    if silence is None:
        return _no_such_silence(key)
    payload = _read_json(request)
    if isinstance(payload, HttpResponse):
        return payload
    try:
        fields = parse_change(payload)
    except Invalid as exc:
        return json_field_errors(exc.errors)
    try:
        silences.change(silence, **fields)
    except silences.Ended:
        return json_error(409, _("This silence has ended; create a new one."))
    return JsonResponse(describe(silence))


def _end_now(request: HttpRequest, key: str) -> HttpResponse:
    token = _writer(request)
    if isinstance(token, HttpResponse):
        return token
    silence = _find(key)
    if silence is None:
        return _no_such_silence(key)
    return JsonResponse(describe(silences.end(silence)))


@csrf_exempt
def silence_item(request: HttpRequest, key: str) -> HttpResponse:
    if request.method in ("GET", "HEAD"):
        denied = reader_refusal(request)
        if denied:
            return denied
        silence = _find(key)
        return JsonResponse(describe(silence)) if silence else _no_such_silence(key)
    if request.method == "PATCH":
        return _change(request, key)
    if request.method == "DELETE":
        return _end_now(request, key)
    return method_not_allowed("GET, HEAD, PATCH, DELETE")
