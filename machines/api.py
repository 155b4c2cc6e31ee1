"""The JSON API: hosts register themselves, automation and the dashboard read the inventory."""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from . import queries, services, signals
from .http import first_rate_limit_hit, json_error, json_field_errors
from .models import ApiToken, Machine
from .services import MachineLimitReached, register_machine
from .tokens import authenticate
from .validation import InvalidInput, normalise_ip, parse_registration

MAX_BODY_BYTES = 16 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
MAX_PAGE = 1_000_000


def _unauthorized(request: HttpRequest) -> JsonResponse:
    if request.META.get("HTTP_AUTHORIZATION"):
        message = _("The token is unknown or revoked.")
    else:
        message = _("Authentication required: send 'Authorization: Bearer <token>'.")
    return json_error(401, message, WWW_Authenticate='Bearer realm="vxlanmgr"')


def _too_many(seconds: int) -> JsonResponse:
    return json_error(429, _("Too many requests; retry in %(s)d s.") % {"s": seconds}, Retry_After=str(seconds))


def reader_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the caller may read the inventory, else the error response to send. (Also the rule of
    monitoring's read-only API.)"""
    if request.user.is_authenticated:
        if request.user.has_perm("machines.view_machine"):
            return None
        return json_error(403, _("Your account has no role that may read the inventory."))
    token = authenticate(request.META.get("HTTP_AUTHORIZATION", ""))
    if token is None:
        return _unauthorized(request)
    if token.scope != ApiToken.Scope.API:
        return json_error(403, _("A register token can only register its own address; use an API token."))
    return None


def _read_json(request: HttpRequest) -> object | JsonResponse:
    raw_length = request.META.get("CONTENT_LENGTH") or "0"
    if not (raw_length.isascii() and raw_length.isdigit()):
        return json_field_errors({"body": [_("The Content-Length header is not a number.")]})
    declared = int(raw_length)
    too_big = json_error(413, _("The body is larger than %(n)d bytes.") % {"n": MAX_BODY_BYTES})
    if declared > MAX_BODY_BYTES:
        return too_big
    content_type = request.content_type or ""
    if content_type != "application/json" and not content_type.endswith("+json"):
        return json_error(415, _("Send the body as JSON with 'Content-Type: application/json'."))
    try:
        body = request.body
    except RequestDataTooBig:
        return too_big
    if len(body) > MAX_BODY_BYTES:
        return too_big
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return json_field_errors({"body": [_("Malformed JSON: %(error)s") % {"error": exc}]})
    except RecursionError:
        return json_field_errors({"body": [_("The JSON is nested too deeply.")]})


def _register(request: HttpRequest, key: str) -> HttpResponse:
    token = authenticate(request.META.get("HTTP_AUTHORIZATION", ""))
    source = request.client_ip
    # Hosts (and guessers) count per address first; only a known token counts against the global limit, and
    # only once its address is within its own: a guesser cannot use up the fleet's budget. With Redis both
    # counters take one round trip.
    limits = []
    if token is None or token.scope != ApiToken.Scope.API:
        limits.append(("register-ip", settings.REGISTER_RATE_PER_IP, f"ip:{source}"))
    if token is not None:
        limits.append(("register-global", settings.REGISTER_RATE_GLOBAL, "all"))
    wait = first_rate_limit_hit(request, limits)
    if wait:
        return _too_many(wait)
    if token is None:
        return _unauthorized(request)

    payload = _read_json(request)
    if isinstance(payload, HttpResponse):
        return payload
    try:
        path_ip = normalise_ip(key)
    except ValueError as exc:
        return json_field_errors({"ip_address": [str(exc)]})
    if token.scope == ApiToken.Scope.REGISTER and path_ip != source:
        return json_error(
            403,
            _("A register token may only register the address the request comes from (%(source)s), not %(ip)s.")
            % {"source": source, "ip": path_ip},
        )
    try:
        data = parse_registration(path_ip, payload)
    except InvalidInput as exc:
        return json_field_errors(exc.errors)
    try:
        result = register_machine(data)
    except MachineLimitReached:
        return json_error(
            503,
            _("The limit of %(n)d machines is reached; delete unused machines or raise VXLANMGR_MAX_MACHINES.")
            % {"n": settings.MAX_MACHINES},
            Retry_After="300",
        )
    response = JsonResponse(result.machine.to_dict(), status=201 if result.created else 200)
    if result.created:
        response["Location"] = reverse("machines-api-item", args=[result.machine.pk])
    return response


def _detail(request: HttpRequest, key: str) -> HttpResponse:
    denied = reader_refusal(request)
    if denied:
        return denied
    machine = machine_by_id(key)
    if machine is None:
        return no_such_machine(key)
    return JsonResponse(describe(machine))


def machine_by_id(key: str) -> Machine | None:
    """The machine whose id is `key` (text from a URL), or None."""
    if not (key.isascii() and key.isdigit()) or len(key) > 18:
        return None
    return Machine.objects.filter(pk=int(key)).first()


def no_such_machine(key: str) -> JsonResponse:
    return json_error(404, _("No machine with id %(id)s.") % {"id": key})


def describe(machine: Machine) -> dict:
    """The machine's JSON with what the layers above add to it (signals.describe_machine)."""
    data = machine.to_dict()
    for _receiver, extra in signals.describe_machine.send(sender=Machine, machine=machine):
        data = (extra or {}) | data
    return data


def describe_page(machines: list[Machine]) -> list[dict]:
    """A page of machines' JSON with what the layers above add to each (signals.describe_machines)."""
    pages = [machine.to_dict() for machine in machines]
    for _receiver, extras in signals.describe_machines.send(sender=Machine, machines=machines):
        for data, machine in zip(pages, machines, strict=True):
            data.update({key: value for key, value in (extras or {}).get(machine.pk, {}).items() if key not in data})
    return pages


def _delete(request: HttpRequest, key: str) -> HttpResponse:
    token = authenticate(request.META.get("HTTP_AUTHORIZATION", ""))
    if token is None:
        return _unauthorized(request)
    if token.scope != ApiToken.Scope.API:
        return json_error(403, _("Deleting machines needs an API token."))
    if not (key.isascii() and key.isdigit()) or len(key) > 18:
        return json_error(404, _("No machine with id %(id)s.") % {"id": key})
    force = request.GET.get("force", "").lower() in {"1", "true", "yes"}
    try:
        services.delete_machine(int(key), actor=f"API token {token.name}", force=force)
    except services.AlreadyDeleted:
        return json_error(404, _("No machine with id %(id)s.") % {"id": key})
    except services.NotUnreachable as exc:
        return json_error(
            409,
            _("%(host)s is %(status)s, not unreachable; add ?force=true to delete it anyway.")
            % {"host": exc.machine.hostname, "status": exc.machine.status},
        )
    return HttpResponse(status=204)


@csrf_exempt
def machine_item(request: HttpRequest, key: str) -> HttpResponse:
    # PUT takes an IP address (hosts know theirs); GET and DELETE take the id the API handed out.
    if request.method == "PUT":
        return _register(request, key)
    if request.method in ("GET", "HEAD"):
        return _detail(request, key)
    if request.method == "DELETE":
        return _delete(request, key)
    return method_not_allowed("GET, HEAD, PUT, DELETE")


def _positive_int(raw: str | None, default: int, maximum: int) -> int:
    if raw in (None, ""):
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(_("Must be a whole number of at least 1."))
    if int(raw) > maximum:
        raise ValueError(_("Must be at most %(n)d.") % {"n": maximum})
    return int(raw)


def method_not_allowed(allowed: str) -> JsonResponse:
    response = json_error(405, _("Method not allowed."))
    response["Allow"] = allowed
    return response


@csrf_exempt
def machine_list(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    denied = reader_refusal(request)
    if denied:
        return denied
    errors: dict[str, list[str]] = {}
    status = request.GET.get("status", "")
    if status and status not in Machine.Status.values:
        errors["status"] = [_("Must be one of: %(values)s.") % {"values": ", ".join(Machine.Status.values)}]
    try:
        page = _positive_int(request.GET.get("page"), 1, MAX_PAGE)
    except ValueError as exc:
        errors["page"] = [str(exc)]
    try:
        page_size = _positive_int(request.GET.get("page_size"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    except ValueError as exc:
        errors["page_size"] = [str(exc)]
    if errors:
        return json_field_errors(errors)
    machines = queries.search(status, request.GET.get("q", "")).order_by("id")
    start = (page - 1) * page_size
    return JsonResponse(
        {
            "count": machines.count(),
            "page": page,
            "page_size": page_size,
            "results": describe_page(list(machines[start : start + page_size])),
        }
    )
