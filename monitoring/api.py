"""The history API: one machine's checks over time, raw or in hourly or daily buckets (docs/openapi.yaml)."""

from datetime import UTC, datetime, timedelta

from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from machines.api import machine_by_id, method_not_allowed, no_such_machine, reader_refusal
from machines.http import json_field_errors

from . import series

# Without `since`, a series reaches this far back from `until`.
DEFAULT_SPAN = {"raw": timedelta(hours=24), "hour": timedelta(days=7), "day": timedelta(days=365)}
# The longest series one request may ask for: at most ~2,900 raw results at the default interval (60 s), ~2,200
# hours, ~1,800 days.
MAX_SPAN = {"raw": timedelta(hours=48), "hour": timedelta(days=92), "day": timedelta(days=1830)}


class InvalidQuery(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors


def _moment(params: QueryDict, name: str) -> datetime | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    try:
        moment = parse_datetime(raw.strip())
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(_("Not an ISO 8601 date and time, e.g. 2025-06-01T12:00:00Z (URL-encode a + offset)."))
    if timezone.is_naive(moment):
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(_("Out of range.")) from None


def _history_query(params: QueryDict) -> tuple[str, datetime, datetime]:
    """The resolution and the range [since, until) a query asks for, or InvalidQuery naming every bad field."""
    errors: dict[str, list[str]] = {}
    resolution = params.get("resolution") or "hour"
    if resolution not in series.RESOLUTIONS:
        errors["resolution"] = [_("Must be one of: %(values)s.") % {"values": ", ".join(series.RESOLUTIONS)}]
    moments = {}
    for name in ("since", "until"):
        try:
            moments[name] = _moment(params, name)
        except ValueError as exc:
            errors[name] = [str(exc)]
    if errors:
        raise InvalidQuery(errors)
    until = moments["until"] or timezone.now()
    try:
        since = moments["since"] or until - DEFAULT_SPAN[resolution]
    except OverflowError:
        raise InvalidQuery({"until": [_("Out of range.")]}) from None
    if since >= until:
        raise InvalidQuery({"until": [_("Must be later than since.")]})
    if until - since > MAX_SPAN[resolution]:
        days = MAX_SPAN[resolution] / timedelta(days=1)
        message = _("At most %(days)s days before until at this resolution; ask for several ranges.")
        raise InvalidQuery({"since": [message % {"days": f"{days:g}"}]})
    return resolution, since, until


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _point(point: dict) -> dict:
    shown = {key: _iso(value) if isinstance(value, datetime) else value for key, value in point.items()}
    if "failure" in shown:
        shown["failure"] = shown["failure"] or None
    return shown


@csrf_exempt
def machine_history(request: HttpRequest, key: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    denied = reader_refusal(request)
    if denied:
        return denied
    machine = machine_by_id(key)
    if machine is None:
        return no_such_machine(key)
    try:
        resolution, since, until = _history_query(request.GET)
    except InvalidQuery as exc:
        return json_field_errors(exc.errors)
    points = series.points(machine.pk, resolution, since, until)
    return JsonResponse(
        {
            "machine": machine.pk,
            "resolution": resolution,
            "since": _iso(since),
            "until": _iso(until),
            "points": [_point(point) for point in points],
        }
    )
