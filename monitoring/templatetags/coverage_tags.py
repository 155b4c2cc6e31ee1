"""Which of the dashboard's machines nobody is checking now (monitoring/coverage.py), as marks for their rows.
Loaded by the machines templates, which cannot import monitoring. One query per render (the live heartbeats)."""

import html

from django import template
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from monitoring import coverage

register = template.Library()


@register.simple_tag
def unchecked_marks(machines) -> dict[int, str]:
    """machine id -> "Not being checked: <why>" under its host name, for the machines nobody checks now. With no
    monitor at all the page's banner says it once, instead of every row."""
    monitors = coverage.live_monitors()
    if not monitors:
        return {}
    return {pk: _mark(reason) for pk, reason in coverage.unchecked(list(machines), monitors).items()}


@register.simple_tag
def unchecked_reason(machine) -> str:
    """Why nobody checks this machine now ("" when a live monitor does), for its page."""
    return coverage.unchecked_reason(machine.vni, machine.ip_address, coverage.live_monitors())


def _mark(reason: str) -> str:
    text = html.escape(_("Not being checked: %(reason)s") % {"reason": reason})
    return SafeString(f' <span class="unchecked-mark">{text}</span>')
