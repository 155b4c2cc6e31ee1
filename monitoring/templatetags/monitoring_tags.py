from django import template
from django.utils.translation import gettext as _

from machines.templatetags.machine_rows import uptime_percent
from monitoring import uptime
from monitoring.models import PingResult
from monitoring.status import cutoff_notices, monitor_problem

register = template.Library()
RECENT_CHECKS = 50


@register.inclusion_tag("monitoring/_monitor_banner.html")
def monitor_banner() -> dict:
    """The dashboard's warning when nobody is checking the machines (nothing when a monitor is)."""
    return {"monitor_problem": monitor_problem(), "cutoffs": cutoff_notices()}


@register.inclusion_tag("monitoring/_recent_checks.html")
def recent_checks(machine) -> dict:
    """The machine page's latest check results, newest first."""
    return {"pings": PingResult.objects.filter(machine_id=machine.pk).order_by("-checked_at")[:RECENT_CHECKS]}


@register.simple_tag
def machine_uptime(machine) -> list[dict]:
    """The machine page's uptime over each window: [{"label": …, "value": share or None}, …]."""
    labels = {
        "24h": _("Uptime, last 24 hours"),
        "7d": _("Uptime, last 7 days"),
        "30d": _("Uptime, last 30 days"),
        "365d": _("Uptime, last 365 days"),
    }
    return [{"label": labels[window], "value": value} for window, value in uptime.uptime(machine).items()]


# The machine page shows uptimes as the dashboard rows do.
register.filter("uptime_percent", uptime_percent)
