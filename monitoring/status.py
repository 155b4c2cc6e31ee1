"""Whether anybody is checking the machines: read from the monitors' heartbeats."""

from datetime import timedelta

from django.utils import timezone
from django.utils.translation import gettext as _

from .coverage import cutoffs
from .cutoffs import vni_of
from .models import MonitorHeartbeat

STALE_AFTER = timedelta(seconds=45)


def monitor_problem() -> str:
    """A sentence for the operator when no monitor is checking, else an empty string."""
    beats = list(MonitorHeartbeat.objects.filter(last_beat_at__gte=timezone.now() - STALE_AFTER))
    if any(not beat.error for beat in beats):
        return ""
    errors = [beat.error for beat in beats if beat.error]
    if errors:
        return _("The monitor cannot send pings, so no status is current: %(error)s") % {"error": errors[0]}
    return _(
        "No monitor has reported in the last minute, so statuses are not current. "
        "Start it with 'python manage.py monitor' (make run starts it for you)."
    )


def cutoff_notices() -> list[str]:
    """One sentence per segment a live monitor is cut off from (monitoring/isolation.py)."""
    notices = []
    for monitor, segment, state in cutoffs():
        vni = vni_of(segment)
        where = _("VNI %(vni)s") % {"vni": vni} if vni is not None else _("machines without a VNI")
        notices.append(
            _("Monitor %(name)s is cut off from %(where)s (%(reason)s). Its machines keep their last known status "
              "and are not being checked until it reaches them again.")
            % {"name": monitor, "where": where, "reason": state.get("reason", "")}
        )
    return notices
