"""The dashboard's machine rows (templates/machines/_rows.html): every machine on every page, list and push.

`{% machine_rows machines marks… %}` renders them in Python from one format string, `ROW`, because a row is the
dashboard's unit of cost: as template markup each row took about 31 variable lookups and filter calls, which
made the first page of 100 machines cost more than the JSON list of 500. Everything that is the same for every
row (labels, URL prefix) is worked out once per call.

Escaping: every value put into ROW goes through `_escape`, which is Django's `conditional_escape` (text escaped
as `escape` does, values with `__html__`, such as the time tag's markup, passed as they are) without its lazy
wrapper. The marks are HTML from trusted tags (`SafeString`), shown after the host name.

To add to a row: a mark after the host name needs no change here, only a dict {machine pk: safe HTML} passed as
one more argument (the silence mark is one); a new cell or class goes into ROW and `_row_fields`.
"""

import html
import math

from django import template
from django.urls import reverse
from django.utils.formats import number_format
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext, pgettext

from ..status import Status
from .machine_time import relative_time

register = template.Library()

# One row. The cells by position: status, host name (and its marks), IP address, MAC address, VNI, last seen,
# registered (wide screens only), 30-day uptime, actions. Below 768 px the stylesheet lays the row out as a
# card, each field with its label from data-label.
ROW = (
    '\n<tr id="machine-{pk}" class="machine-row row-{status}{flash}">'
    '<td><span class="status">{status_label}</span></td>'
    '<td class="cell-hostname"><a href="{detail_url}">{hostname}</a>{marks}</td>'
    '<td data-label="{ip_label}">{ip_address}</td>'
    '<td data-label="{mac_label}">{mac_address}</td>'
    '<td data-label="{vni_label}">{vni}</td>'
    '<td data-label="{seen_label}">{last_seen}</td>'
    "<td>{registered}</td>"
    '<td class="cell-uptime" data-label="{uptime_label}">{uptime}</td>'
    "<td>{actions}</td></tr>"
)
# Delete, for an unreachable machine, to those who may delete it; the confirmation is fetched by htmx.
DELETE_LINK = (
    '<a class="button button-danger button-small" href="{delete_url}" hx-get="{delete_url}"'
    ' aria-label="{delete_host_label}">{delete_label}</a>'
)


def _escape(value) -> str:
    if hasattr(value, "__html__"):
        return value.__html__()
    return html.escape(str(value))


@register.simple_tag(takes_context=True)
def machine_rows(context, machines, *marks: dict) -> SafeString:
    """The rows of `machines`; `flash` and `can_delete` come from the template's context. Each of `marks` maps
    a machine's pk to HTML shown after its host name."""
    shared = _shared_fields(flash=bool(context.get("flash")))
    can_delete = bool(context.get("can_delete"))
    return SafeString("".join(
        ROW.format_map(_row_fields(machine, shared, marks, can_delete)) for machine in machines
    ))


def _shared_fields(flash: bool) -> dict:
    """What every row of one render has in common, escaped, in the active language."""
    return {
        "flash": " flash" if flash else "",
        # The detail URL's last segment is the pk.
        "detail_prefix": _escape(reverse("machines-detail", args=[0])[:-1]),
        "status_labels": {
            Status.ACTIVE.value: _escape(gettext("Active")),
            Status.UNREACHABLE.value: _escape(gettext("Unreachable")),
        },
        "other_status_label": _escape(gettext("Pending")),
        "ip_label": _escape(gettext("IP address")),
        "mac_label": _escape(gettext("MAC address")),
        "vni_label": _escape(gettext("VNI")),
        "seen_label": _escape(gettext("Last seen")),
        "uptime_label": _escape(gettext("Uptime")),
        "delete_label": _escape(gettext("Delete")),
        "delete_host_label": _escape(delete_host_label()),
    }


def _row_fields(machine, shared: dict, marks: tuple, can_delete: bool) -> dict:
    pk = machine.pk
    status = machine.status
    detail_url = f"{shared['detail_prefix']}{pk}"
    hostname = _escape(machine.hostname)
    actions = ""
    if can_delete and status == Status.UNREACHABLE:
        actions = DELETE_LINK.format(
            delete_url=f"{detail_url}/delete",
            delete_host_label=shared["delete_host_label"] % {"host": hostname},
            delete_label=shared["delete_label"],
        )
    return {
        **shared,
        "pk": pk,
        "status": _escape(status),
        "status_label": shared["status_labels"].get(status, shared["other_status_label"]),
        "detail_url": detail_url,
        "hostname": hostname,
        "marks": "".join(_escape(mark[pk]) for mark in marks if mark and pk in mark),
        "ip_address": _escape(machine.ip_address),
        "mac_address": _escape(machine.mac_address),
        "vni": "—" if machine.vni is None else _escape(machine.vni),
        "last_seen": relative_time(machine.last_seen_at),
        "registered": relative_time(machine.registered_at),
        "uptime": _escape(uptime_percent(machine.uptime_30d)),
        "actions": actions,
    }


@register.filter
def uptime_percent(share: float | None) -> str:
    """0.99937 -> "99.93 %", "—" for None. Rounded down: a machine that missed a check never shows 100.00 %."""
    if share is None:
        return "—"
    # The epsilon keeps 0.9993 (stored as 0.99929999…) at 99.93.
    hundredths = math.floor(share * 10000 + 1e-6)
    return pgettext("uptime", "%(percent)s %%") % {"percent": number_format(hundredths / 100, 2)}


@register.simple_tag
def delete_host_label() -> str:
    # Not {% translate "Delete %(host)s" %}: the tag looks a literal with % up as "%%", which has no translation.
    return gettext("Delete %(host)s")


@register.filter
def with_host(label: str, host: str) -> str:
    """Fill %(host)s in a label translated once: a {% blocktranslate %} per row cost about 50 µs."""
    return mark_safe(conditional_escape(label) % {"host": conditional_escape(host)})  # noqa: S308  both escaped
