from django import template

from monitoring.models import PingResult
from monitoring.status import monitor_problem

register = template.Library()
RECENT_CHECKS = 50


@register.inclusion_tag("monitoring/_monitor_banner.html")
def monitor_banner() -> dict:
    """The dashboard's warning when nobody is checking the machines (nothing when a monitor is)."""
    return {"monitor_problem": monitor_problem()}


@register.inclusion_tag("monitoring/_recent_checks.html")
def recent_checks(machine) -> dict:
    """The machine page's latest check results, newest first."""
    return {"pings": PingResult.objects.filter(machine_id=machine.pk).order_by("-checked_at")[:RECENT_CHECKS]}
