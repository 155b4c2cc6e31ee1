"""The Monitors page: every monitor that reported in the last day, what it checks, and whether it is live,
cut off or silent. Machines no live monitor covers are counted per VNI, so a scope nobody watches shows."""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _

from machines.models import Machine

from .coverage import live_monitors, unchecked_reason
from .cutoffs import vni_of
from .models import MonitorHeartbeat
from .scope import Scope, ScopeError
from .silences_views import VIEW, _permission


@dataclass
class MonitorRow:
    heartbeat: MonitorHeartbeat
    scope: str
    state: str  # "live", "cut-off", "error", "stale"
    state_label: str
    cutoffs: list[str]
    checks: int


def _row(beat: MonitorHeartbeat, fresh: datetime) -> MonitorRow:
    try:
        scope = Scope.parse(beat.scope).describe()
    except ScopeError:
        scope = beat.scope
    cut = [
        _("VNI %(vni)s: %(reason)s") % {"vni": vni_of(segment), "reason": state.get("reason", "")}
        if vni_of(segment) is not None else state.get("reason", "")
        for segment, state in sorted((beat.isolation or {}).items())
    ]
    if beat.last_beat_at < fresh:
        state, label = "stale", _("Not reporting")
    elif beat.error:
        state, label = "error", _("Cannot send pings")
    elif cut:
        state, label = "cut-off", _("Cut off")
    else:
        state, label = "live", _("Checking")
    checks = sum(((beat.counters or {}).get("checks") or {}).values())
    return MonitorRow(beat, scope, state, label, cut, checks)


@_permission(VIEW)
def monitor_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    fresh = now - timedelta(seconds=settings.MONITOR_STALE)
    beats = MonitorHeartbeat.objects.filter(last_beat_at__gte=now - timedelta(days=1)).order_by("name")
    monitors = live_monitors(now)
    # Per VNI, so thousands of machines stay one query and a short list.
    uncovered: Counter = Counter()
    reasons: dict = {}
    for vni, ip in Machine.objects.values_list("vni", "ip_address").iterator(chunk_size=5000):
        reason = unchecked_reason(vni, ip, monitors)
        if reason:
            uncovered[vni] += 1
            reasons.setdefault(vni, reason)
    context = {
        "monitors": [_row(beat, fresh) for beat in beats],
        "uncovered": [(vni, count, reasons[vni]) for vni, count in sorted(uncovered.items(), key=_vni_order)],
        "stale_seconds": settings.MONITOR_STALE,
    }
    return render(request, "monitoring/monitors.html", context)


def _vni_order(item) -> tuple:
    vni = item[0]
    return (vni is None, vni or 0)
