"""`{% relative_time value %}`: a timestamp as the machine pages show it, rendered in Python.

The instant in UTC for the script that keeps it current, the local time as a tooltip, "3 minutes ago" as text,
or "never". The dashboard shows hundreds of these, so the tag is written for speed: the text is exactly what
humanize's `naturaltime` says, but its arithmetic is redone here with integers and each distinct phrase is
translated once per language and then looked up: `naturaltime` translates up to four lazy strings per call, and
was the dashboard's largest cost after its queries. test_time_tag_matches_humanize.py holds the two to the same
markup over a wide sweep of times.
"""

import functools
import html
from datetime import UTC, datetime

from django import template
from django.contrib.humanize.templatetags.humanize import NaturalTimeFormatter
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from django.utils.html import avoid_wrapping
from django.utils.safestring import SafeString
from django.utils.timesince import MONTHS_DAYS, TIME_CHUNKS, TIME_STRINGS_KEYS
from django.utils.translation import get_language, gettext

register = template.Library()


@register.simple_tag
def relative_time(value):
    # The markup format_html would build, without its per-call set-up. Every part is escaped as format_html
    # would (html.escape is what Django's escape calls) except the ISO timestamp, which has no character to escape.
    # SafeString is what mark_safe returns for a str, less its check for lazy arguments.
    if not value:
        never = gettext("never")  # outside the f-string, where makemessages would not see it
        return SafeString(f'<span class="muted">{html.escape(never)}</span>')
    aware = timezone.make_aware(value, timezone.get_default_timezone()) if timezone.is_naive(value) else value
    return SafeString(
        f'<time datetime="{aware.astimezone(UTC).isoformat(timespec="seconds")}"'
        f' title="{html.escape(_local_title(timezone.template_localtime(value)))}">'
        f"{_phrase(get_language(), _natural_time(value))}</time>"
    )


def _local_title(local: datetime) -> str:
    # What django.utils.dateformat makes of "Y-m-d H:i:s T", without its per-call set-up: the zone name is
    # left out when the wall time is ambiguous or does not exist (a DST change), as Django does.
    zone = timezone.get_default_timezone() if timezone.is_naive(local) else local.tzinfo
    ambiguous = zone.utcoffset(local.replace(fold=not local.fold)) != zone.utcoffset(local)
    name = "" if ambiguous else str(zone.tzname(local))
    # isoformat pads the year to four digits, as "Y" does; the first 19 characters leave out any UTC offset.
    return f"{local.isoformat(' ', 'seconds')[:19]} {name}"


def _natural_time(value: datetime) -> tuple:
    """What `naturaltime(value)` will say, as a key for `_phrase`: its arithmetic, step for step."""
    now = datetime.now(UTC if timezone.is_aware(value) else None)
    past = value < now
    delta = now - value if past else value - now
    if delta.days:
        return ("past-day" if past else "future-day", _timesince(value, now, reverse=not past))
    if not delta.seconds:
        return ("now", None)
    tense = "past-" if past else "future-"
    if delta.seconds < 60:
        return (tense + "second", delta.seconds)
    if delta.seconds < 60 * 60:
        return (tense + "minute", delta.seconds // 60)
    return (tense + "hour", delta.seconds // (60 * 60))


def _timesince(d: datetime, now: datetime, reverse: bool) -> tuple:
    """django.utils.timesince.timesince(d, now, reversed=reverse) at its default depth of 2, as (unit, count)
    pairs: () for "0 minutes". The same datetime steps, so DST and month-end quirks come out alike."""
    if now.tzinfo is not None:  # both aware (now is when d is): the same tzinfo, so differences are in wall time
        now = now.astimezone(d.tzinfo)
    if reverse:
        d, now = now, d
    delta = now - d
    if delta.days * 24 * 60 * 60 + delta.seconds <= 0:
        return ()
    total_months = (now.year - d.year) * 12 + (now.month - d.month)
    if d.day > now.day or (d.day == now.day and d.time() > now.time()):
        total_months -= 1
    years, months = divmod(total_months, 12)
    if years or months:
        pivot_year, pivot_month = d.year + years, d.month + months
        if pivot_month > 12:
            pivot_month -= 12
            pivot_year += 1
        day = min(MONTHS_DAYS[pivot_month - 1], d.day)
        pivot = datetime(pivot_year, pivot_month, day, d.hour, d.minute, d.second, tzinfo=d.tzinfo)
    else:
        pivot = d
    # Django divides float seconds; whole seconds give the same counts, the chunks being whole seconds.
    rest = now - pivot
    rest = rest.days * 24 * 60 * 60 + rest.seconds
    counts = [years, months]
    for chunk in TIME_CHUNKS:
        count, rest = divmod(rest, chunk)
        counts.append(count)
    first = next((i for i, count in enumerate(counts) if count), None)
    if first is None:
        return ()
    # Two adjacent units at most, and no zero: "1 year, 2 months" or "3 weeks", never "1 year, 5 days".
    units = [(TIME_STRINGS_KEYS[first], counts[first])]
    if first + 1 < len(counts) and counts[first + 1]:
        units.append((TIME_STRINGS_KEYS[first + 1], counts[first + 1]))
    return tuple(units)


@functools.lru_cache(maxsize=4096)
def _phrase(language: str, key: tuple) -> str:
    """The escaped text naturaltime gives for `key`, in the active language (which `language` names, so each
    language has its own cache entries), made from the very strings naturaltime and timesince translate."""
    kind, arg = key
    strings = NaturalTimeFormatter.time_strings
    if kind == "now":
        text = strings["now"]
    elif kind.endswith("-day"):
        units = NaturalTimeFormatter.past_substrings if kind == "past-day" else NaturalTimeFormatter.future_substrings
        parts = [avoid_wrapping(units[unit] % {"num": count}) for unit, count in arg or [("minute", 0)]]
        text = strings[kind] % {"delta": gettext(", ").join(parts)}
    else:
        text = strings[kind] % {"count": arg}
    return html.escape(str(text))


@receiver(setting_changed)
def _forget_phrases(*, setting, **kwargs):
    # Tests may swap catalogues under the same language code.
    if setting in {"LANGUAGES", "LANGUAGE_CODE", "LOCALE_PATHS", "USE_I18N", "INSTALLED_APPS"}:
        _phrase.cache_clear()
