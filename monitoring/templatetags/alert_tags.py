"""What the dashboard shows about alerts: which machines are silenced (a mark on their row) and alerts that could
not be delivered (a banner). Loaded by the machines templates, which cannot import monitoring.

Both are written for the dashboard's budget: the marks of a whole page cost one query (the active silences, few),
the banner's count is shared by every page for a few seconds.
"""

import contextlib
import html
from datetime import datetime, timedelta

from django import template
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from monitoring.alerts import outbox, silences
from monitoring.models import Notification

register = template.Library()

# The banner counts alerts given up within this long, so it goes away on its own once nothing new fails.
FAILED_WINDOW = timedelta(days=7)
FAILED_CACHE_SECONDS = 15
_FAILED_KEY = "vxlanmgr:alerts:failed-count"


@register.simple_tag
def silenced_machines(machines) -> dict[int, datetime]:
    """machine id -> when its silence ends, for the machines of `machines` a silence covers now."""
    machines = list(machines)
    if not machines:
        return {}
    return silences.covering(outbox.active_silences(), machines)


@register.simple_tag
def machine_silenced_until(machine) -> datetime | None:
    """When the silence covering this machine ends (the last, when several do), or None."""
    return silences.covering(outbox.active_silences(), [machine]).get(machine.pk)


@register.simple_tag
def silence_marks(machines) -> dict[int, str]:
    """machine id -> its row's 🔕 mark, for the machines of `machines` a silence covers now (one query): the
    marks `{% machine_rows %}` shows after the host names."""
    return {pk: _mark(until) for pk, until in silenced_machines(machines).items()}


@register.filter
def silence_mark(machine, silenced: dict) -> str:
    """The row's 🔕 with "silenced until …" when the machine is silenced, else nothing."""
    until = silenced.get(machine.pk) if silenced else None
    if until is None:
        return ""
    return _mark(until)


def _mark(until: datetime) -> str:
    local = timezone.localtime(until)
    label = html.escape(_("Alerts silenced until %(time)s") % {"time": f"{local:%Y-%m-%d %H:%M} {local.tzname()}"})
    return SafeString(f' <span class="silenced-mark" role="img" title="{label}" aria-label="{label}">🔕</span>')


def failed_alerts(now: datetime | None = None) -> int:
    """Alerts given up (marked failed) within FAILED_WINDOW. A failed alert's next_attempt_at is its last try,
    which is when it was given up (within one backoff step); the outbox's (state, next_attempt_at) index
    answers it."""
    now = now or timezone.now()
    return Notification.objects.filter(
        state=Notification.State.FAILED, next_attempt_at__gte=now - FAILED_WINDOW,
    ).count()


def _cached_failed_alerts() -> int:
    try:
        count = cache.get(_FAILED_KEY)
    except Exception:  # a cache outage costs the query, not the page
        return failed_alerts()
    if count is None:
        count = failed_alerts()
        with contextlib.suppress(Exception):
            cache.set(_FAILED_KEY, count, FAILED_CACHE_SECONDS)
    return count


@register.inclusion_tag("monitoring/_alerts_banner.html", takes_context=True)
def alerts_banner(context) -> dict:
    """The dashboard's warning when alerts could not be delivered; staff get a link to them in the admin."""
    count = _cached_failed_alerts()
    user = context.get("user")
    link = ""
    if count and user is not None and user.is_staff and user.has_perm("monitoring.view_notification"):
        link = reverse("admin:monitoring_notification_changelist") + "?state__exact=failed"
    return {"failed": count, "admin_url": link, "days": FAILED_WINDOW.days}
