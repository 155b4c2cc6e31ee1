"""The text of an alert: a title and a plain-text body, in the channel's language.

One notification makes one message; a group (many machines changing at once) makes one message that counts
them per event and names the first GROUP_NAMED. The same text goes to every service: the subject and body of
an e-mail, the `title` and `message` of a JSON webhook.
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext_lazy

from ..models import AlertKind, Channel, Notification

GROUP_NAMED = 20
PREFIX = "[vxlanmgr] "

# What happened to one machine, as a title; %(host)s is "name (address)".
_TITLES = {
    AlertKind.UNREACHABLE: gettext_lazy("%(host)s became unreachable"),
    AlertKind.RECOVERED: gettext_lazy("%(host)s recovered"),
    AlertKind.DELETED: gettext_lazy("%(host)s was deleted"),
    AlertKind.MAC_CHANGED: gettext_lazy("%(host)s changed its MAC address"),
    AlertKind.MONITOR_DOWN: gettext_lazy("No monitor is running"),
    AlertKind.MONITOR_BACK: gettext_lazy("The monitor is running again"),
    AlertKind.FLAPPING: gettext_lazy("%(host)s is flapping"),
    AlertKind.STABLE: gettext_lazy("%(host)s is stable again"),
    AlertKind.STILL_UNREACHABLE: gettext_lazy("%(host)s is still unreachable after a silence"),
}

# The count line of a group, per event.
_COUNTS = {
    AlertKind.UNREACHABLE: ngettext_lazy(
        "%(count)d machine became unreachable", "%(count)d machines became unreachable", "count"),
    AlertKind.RECOVERED: ngettext_lazy("%(count)d machine recovered", "%(count)d machines recovered", "count"),
    AlertKind.DELETED: ngettext_lazy("%(count)d machine was deleted", "%(count)d machines were deleted", "count"),
    AlertKind.MAC_CHANGED: ngettext_lazy(
        "%(count)d machine changed its MAC address", "%(count)d machines changed their MAC address", "count"),
    AlertKind.MONITOR_DOWN: ngettext_lazy(
        "%(count)d alert: no monitor is running", "%(count)d alerts: no monitor is running", "count"),
    AlertKind.MONITOR_BACK: ngettext_lazy(
        "%(count)d alert: the monitor is running again", "%(count)d alerts: the monitor is running again", "count"),
    AlertKind.FLAPPING: ngettext_lazy("%(count)d machine is flapping", "%(count)d machines are flapping", "count"),
    AlertKind.STABLE: ngettext_lazy(
        "%(count)d machine is stable again", "%(count)d machines are stable again", "count"),
    AlertKind.STILL_UNREACHABLE: ngettext_lazy(
        "%(count)d machine is still unreachable after a silence",
        "%(count)d machines are still unreachable after a silence", "count"),
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def render(channel: Channel, notifications: list[Notification]) -> Message:
    """One message for these notifications of one channel: a single alert, or a group listing them."""
    with translation.override(channel.language):
        if len(notifications) == 1:
            return _single(notifications[0])
        return _group(notifications)


def _single(alert: Notification) -> Message:
    title = str(_TITLES[alert.kind]) % {"host": _host(alert)}
    lines = []
    if alert.hostname or alert.ip_address:
        lines += [
            _("Host: %(hostname)s") % {"hostname": alert.hostname or "-"},
            _("IP address: %(ip)s") % {"ip": alert.ip_address or "-"},
            _("VNI: %(vni)s") % {"vni": "-" if alert.vni is None else alert.vni},
        ]
    lines += [
        _("Event: %(event)s") % {"event": AlertKind(alert.kind).label},
        _("When: %(when)s") % {"when": when(alert.occurred_at)},
    ]
    if alert.detail:
        lines.append(_("Detail: %(detail)s") % {"detail": alert.detail})
    link = machine_link(alert)
    if link:
        lines.append(_("Machine page: %(url)s") % {"url": link})
    elif settings.BASE_URL:
        lines.append(_("Dashboard: %(url)s") % {"url": settings.BASE_URL + "/"})
    return Message(PREFIX + title, "\n".join(lines))


def _group(alerts: list[Notification]) -> Message:
    alerts = sorted(alerts, key=lambda alert: (alert.occurred_at, alert.pk or 0))
    counts = Counter(alert.kind for alert in alerts)
    # Events in the order of AlertKind, so "unreachable" comes first.
    summary = [str(_COUNTS[kind] % {"count": counts[kind]}) for kind in AlertKind if counts[kind]]
    lines = [*summary, ""]
    for alert in alerts[:GROUP_NAMED]:
        lines.append(_("- %(host)s, VNI %(vni)s: %(event)s at %(when)s") % {
            "host": _host(alert), "vni": "-" if alert.vni is None else alert.vni,
            "event": AlertKind(alert.kind).label, "when": when(alert.occurred_at),
        })
        link = machine_link(alert)
        if link:
            lines.append(f"  {link}")
    if len(alerts) > GROUP_NAMED:
        lines.append(_("and %(count)d more") % {"count": len(alerts) - GROUP_NAMED})
    if settings.BASE_URL:
        lines += ["", _("Dashboard: %(url)s") % {"url": settings.BASE_URL + "/"}]
    return Message(PREFIX + ", ".join(summary), "\n".join(lines))


def _host(alert: Notification) -> str:
    if alert.hostname and alert.ip_address:
        return f"{alert.hostname} ({alert.ip_address})"
    return alert.hostname or alert.ip_address or "-"


def when(moment: datetime) -> str:
    """ISO 8601 in the configured time zone, with the zone's name: 2026-12-01T10:00:00+09:00 (Asia/Tokyo)."""
    zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    return f"{timezone.localtime(moment, zone).isoformat(timespec='seconds')} ({settings.TIME_ZONE})"


def machine_link(alert: Notification) -> str:
    """The machine's page, when BASE_URL is set and the machine still exists."""
    if not settings.BASE_URL or alert.machine_id is None or alert.kind == AlertKind.DELETED:
        return ""
    return settings.BASE_URL + reverse("machines-detail", args=[alert.machine_id])
