"""Whether anybody checks a machine right now: the live monitors' scopes and their cut-off segments.

A machine no live monitor covers, or whose every covering monitor is cut off from its segment, is "not being
checked": its status is the last one known, and the dashboard and the API say so instead of showing it stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from .isolation import segment_of
from .models import MonitorHeartbeat
from .scope import Scope, ScopeError


@dataclass(frozen=True)
class LiveMonitor:
    name: str
    scope: Scope
    isolation: dict


def live_monitors(now: datetime | None = None) -> list[LiveMonitor]:
    """Monitors that beat within VXLANMGR_MONITOR_STALE seconds and can send pings."""
    fresh = (now or timezone.now()) - timedelta(seconds=settings.MONITOR_STALE)
    monitors = []
    for name, scope, isolation in MonitorHeartbeat.objects.filter(last_beat_at__gte=fresh, error="").values_list(
        "name", "scope", "isolation"
    ):
        try:
            monitors.append(LiveMonitor(name, Scope.parse(scope), isolation or {}))
        except ScopeError:
            continue
    return monitors


def unchecked_reason(vni: int | None, ip_address: str, monitors: list[LiveMonitor]) -> str:
    """Why nobody checks this machine now, for people; "" when a live monitor does."""
    covering = [monitor for monitor in monitors if monitor.scope.covers(vni, ip_address)]
    if not covering:
        if not monitors:
            return _("no monitor is running")
        if vni is not None:
            return _("no monitor for VNI %(vni)s") % {"vni": vni}
        return _("no monitor covers this address")
    segment = segment_of(vni)
    cut = [monitor.isolation[segment] for monitor in covering if segment in monitor.isolation]
    if len(cut) == len(covering):
        return _("the monitor is cut off from this segment: %(reason)s") % {"reason": cut[0].get("reason", "")}
    return ""


def unchecked(machines, monitors: list[LiveMonitor] | None = None) -> dict[int, str]:
    """{machine id: reason} for the given machines that nobody checks now."""
    monitors = live_monitors() if monitors is None else monitors
    # The usual case, at no cost per machine: a monitor that checks everything and reaches everything.
    if any(monitor.scope.everything and not monitor.isolation for monitor in monitors):
        return {}
    reasons = {}
    for machine in machines:
        reason = unchecked_reason(machine.vni, machine.ip_address, monitors)
        if reason:
            reasons[machine.pk] = reason
    return reasons


def cutoffs(monitors: list[LiveMonitor] | None = None) -> list[tuple[str, str, dict]]:
    """(monitor, segment, {"since", "reason"}) for every segment a live monitor is cut off from."""
    monitors = live_monitors() if monitors is None else monitors
    return [
        (monitor.name, segment, state)
        for monitor in monitors
        for segment, state in sorted(monitor.isolation.items())
    ]
