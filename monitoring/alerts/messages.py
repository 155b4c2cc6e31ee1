"""The text of an alert: a title and a plain-text body, in the channel's language.

One notification makes one message; a group (many machines changing at once) makes one message that counts
them per event and names the first GROUP_NAMED. When every machine registered behind one VTEP (the underlay
tunnel endpoint the register script reports) has the same event in a group, the message names that VTEP once
instead of each of its hosts: their shared path failed (or came back), more likely than each host on its own.
The same text goes to every service: the subject and body of an e-mail, the `title` and `message` of a JSON
webhook.

Rendering runs on the sender threads, without the database: whoever claims the rows loads each notification's
machine (select_related("machine")) and counts the hosts behind their VTEPs with vtep_hosts(), on its database
thread, and hands that count to render().
"""

from __future__ import annotations

import zoneinfo
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext_lazy

from machines.models import Machine

from ..models import AlertKind, Channel, Notification

GROUP_NAMED = 20
PREFIX = "[vxlanmgr] "
# A VTEP is named instead of its hosts when it has at least this many: one host is better named itself.
VTEP_MIN_HOSTS = 2
# VTEPs counted per query (an IN list well within every database's limit on parameters).
_VTEP_CHUNK = 500

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
    # For these two, the "host" is the monitor (monitoring/cutoffs.py): its name, and no address.
    AlertKind.MONITOR_ISOLATED: gettext_lazy("Monitor %(host)s is cut off; its machines are not being checked"),
    AlertKind.MONITOR_REJOINED: gettext_lazy("Monitor %(host)s reaches its machines again"),
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
    AlertKind.MONITOR_ISOLATED: ngettext_lazy(
        "%(count)d monitor is cut off", "%(count)d monitors are cut off", "count"),
    AlertKind.MONITOR_REJOINED: ngettext_lazy(
        "%(count)d monitor reaches its machines again", "%(count)d monitors reach their machines again", "count"),
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def render(channel: Channel, notifications: list[Notification], vtep_hosts: dict[str, int] | None = None) -> Message:
    """One message for these notifications of one channel: a single alert, or a group listing them.

    `vtep_hosts` is vtep_hosts(notifications), computed where the database may be used; without it a group
    names every host."""
    with translation.override(channel.language):
        if len(notifications) == 1:
            return _single(notifications[0])
        return _group(notifications, vtep_hosts or {})


def vtep_hosts(notifications: Iterable[Notification]) -> dict[str, int]:
    """{VTEP: machines registered behind it} for the VTEPs that could be named in a group of these
    notifications (at least VTEP_MIN_HOSTS of their machines share one event there); one query in practice.

    Reads the VTEP through each notification's machine, which the caller has loaded with
    select_related("machine"): a machine not loaded counts as behind no VTEP, rather than costing a query."""
    machines: dict[tuple[str, str], set[int]] = {}
    for alert in notifications:
        vtep = _vtep(alert)
        if vtep:
            machines.setdefault((vtep, alert.kind), set()).add(alert.machine_id)
    shared = sorted({vtep for (vtep, _kind), ids in machines.items() if len(ids) >= VTEP_MIN_HOSTS})
    hosts: dict[str, int] = {}
    for start in range(0, len(shared), _VTEP_CHUNK):
        hosts.update(
            Machine.objects.filter(vtep__in=shared[start:start + _VTEP_CHUNK]).order_by()
            .values("vtep").annotate(count=Count("pk")).values_list("vtep", "count")
        )
    return hosts


def _vtep(alert: Notification) -> str | None:
    if alert.machine_id is None or not Notification.machine.is_cached(alert):
        return None
    return alert.machine.vtep


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


@dataclass(frozen=True)
class _WholeVtep:
    """Every machine behind `vtep` (`hosts` of them) has `kind` in the group: `alerts` are theirs."""

    vtep: str
    kind: str
    hosts: int
    alerts: list[Notification]


def _whole_vteps(alerts: list[Notification], vtep_hosts: dict[str, int]) -> list[_WholeVtep]:
    """The VTEPs whose every registered machine has the same event in these alerts (sorted by time), in the
    order of their first alert."""
    machines: dict[tuple[str, str], set[int]] = {}
    members: dict[tuple[str, str], list[Notification]] = {}
    for alert in alerts:
        vtep = _vtep(alert)
        if vtep in vtep_hosts:
            machines.setdefault((vtep, alert.kind), set()).add(alert.machine_id)
            members.setdefault((vtep, alert.kind), []).append(alert)
    return [
        _WholeVtep(vtep, kind, len(ids), members[vtep, kind])
        for (vtep, kind), ids in machines.items()
        if len(ids) == vtep_hosts[vtep] >= VTEP_MIN_HOSTS
    ]


def _vnis(alerts: list[Notification]) -> str:
    return ", ".join(str(vni) for vni in sorted({alert.vni for alert in alerts if alert.vni is not None})) or "-"


def _group(alerts: list[Notification], vtep_hosts: dict[str, int]) -> Message:
    alerts = sorted(alerts, key=lambda alert: (alert.occurred_at, alert.pk or 0))
    counts = Counter(alert.kind for alert in alerts)
    # Events in the order of AlertKind, so "unreachable" comes first.
    summary = [str(_COUNTS[kind] % {"count": counts[kind]}) for kind in AlertKind if counts[kind]]
    lines = [*summary, ""]
    whole = _whole_vteps(alerts, vtep_hosts)
    for group in whole[:GROUP_NAMED]:
        lines.append(_("- all %(count)d hosts behind VTEP %(vtep)s, VNI %(vnis)s: %(event)s at %(when)s") % {
            "count": group.hosts, "vtep": group.vtep, "vnis": _vnis(group.alerts),
            "event": AlertKind(group.kind).label, "when": when(group.alerts[0].occurred_at),
        })
    if len(whole) > GROUP_NAMED:
        lines.append(_("and %(count)d more VTEPs") % {"count": len(whole) - GROUP_NAMED})
    named = {id(alert) for group in whole for alert in group.alerts}
    rest = [alert for alert in alerts if id(alert) not in named]
    for alert in rest[:GROUP_NAMED]:
        lines.append(_("- %(host)s, VNI %(vni)s: %(event)s at %(when)s") % {
            "host": _host(alert), "vni": "-" if alert.vni is None else alert.vni,
            "event": AlertKind(alert.kind).label, "when": when(alert.occurred_at),
        })
        link = machine_link(alert)
        if link:
            lines.append(f"  {link}")
    if len(rest) > GROUP_NAMED:
        lines.append(_("and %(count)d more") % {"count": len(rest) - GROUP_NAMED})
    if settings.BASE_URL:
        lines += ["", _("Dashboard: %(url)s") % {"url": settings.BASE_URL + "/"}]
    title = PREFIX + ", ".join(summary)
    if whole:
        vteps = list(dict.fromkeys(group.vtep for group in whole))
        shown = ", ".join(vteps[:3]) + (", …" if len(vteps) > 3 else "")
        title += " " + _("(including all hosts behind VTEP %(vteps)s)") % {"vteps": shown}
    return Message(title, "\n".join(lines))


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
