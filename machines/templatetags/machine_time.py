"""`{% relative_time value %}`: the <time> element of the machine pages, rendered in Python.

The dashboard shows three of these per machine (row and card), 300 on a page; through an included template
and three filters each took a quarter of a millisecond, most of the page's server time. The markup is
exactly what ``machines/_time.html`` renders: the instant in UTC for the script, the local time as a
tooltip, "3 minutes ago" as text, or "never".
"""

import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext

register = template.Library()


@register.simple_tag
def relative_time(value):
    if not value:
        return format_html('<span class="muted">{}</span>', gettext("never"))
    aware = timezone.make_aware(value, timezone.get_default_timezone()) if timezone.is_naive(value) else value
    return format_html(
        '<time datetime="{}" title="{}" class="js-relative">{}</time>',
        aware.astimezone(datetime.UTC).isoformat(),  # {{ value|utc|date:'c' }}
        _local_title(timezone.template_localtime(value)),  # {{ value|date:'Y-m-d H:i:s T' }}
        naturaltime(value),
    )


def _local_title(local: datetime.datetime) -> str:
    # What django.utils.dateformat makes of "Y-m-d H:i:s T", without its per-call set-up: the zone name is
    # left out when the wall time is ambiguous or does not exist (a DST change), as Django does.
    zone = timezone.get_default_timezone() if timezone.is_naive(local) else local.tzinfo
    ambiguous = zone.utcoffset(local.replace(fold=not local.fold)) != zone.utcoffset(local)
    name = "" if ambiguous else str(zone.tzname(local))
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d} {local.hour:02d}:{local.minute:02d}:{local.second:02d} "
        f"{name}"
    )
