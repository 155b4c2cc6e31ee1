"""`{% relative_time %}` redoes naturaltime and dateformat for speed; its markup must stay the markup of the tag it
replaced, byte for byte, for any time, in every language, active zone and value zone."""

import calendar
from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

from django.contrib.humanize.templatetags import humanize
from django.test import override_settings
from django.utils import dateformat, timezone, translation
from django.utils.html import format_html
from django.utils.translation import gettext
from hypothesis import example, given, settings
from hypothesis import strategies as st

from machines.templatetags import machine_time

# DST both ways, half-hour and 30-minute DST offsets, a day skipped (Apia, 2011-12-30) and the southern hemisphere.
ZONES = ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe", "Pacific/Apia"]


def reference(value) -> str:
    """The tag as it was: humanize's naturaltime, Django's own date format, format_html."""
    if not value:
        return format_html('<span class="muted">{}</span>', gettext("never"))
    aware = timezone.make_aware(value, timezone.get_default_timezone()) if timezone.is_naive(value) else value
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        aware.astimezone(UTC).isoformat(timespec="seconds"),
        dateformat.format(timezone.template_localtime(value), "Y-m-d H:i:s T"),
        humanize.naturaltime(value),
    )


def both(value, now: datetime, language: str, zone: str) -> tuple[str, str]:
    """The new tag's markup and the reference's, on a clock stopped at `now` (aware, UTC) for both."""

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return now.astimezone(tz) if tz else now.replace(tzinfo=None)  # naive: like a host clock on UTC

    with (
        mock.patch.object(humanize, "datetime", Clock),
        mock.patch.object(machine_time, "datetime", Clock),
        translation.override(language),
        timezone.override(zone),
    ):
        return machine_time.relative_time(value), reference(value)


moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
offsets = st.one_of(
    st.integers(-150, 150).map(lambda s: timedelta(seconds=s)),  # now, seconds, a minute
    st.timedeltas(-timedelta(days=2), timedelta(days=2)),  # minutes, hours, the one-day switch to timesince
    st.timedeltas(-timedelta(days=100), timedelta(days=100)),  # days, weeks, months
    st.timedeltas(-timedelta(days=365 * 40), timedelta(days=365 * 40)),  # years
)
zones = st.sampled_from(ZONES)
languages = st.sampled_from(["en", "ja"])


@settings(max_examples=1000, deadline=None)
@given(now=moments, offset=offsets, value_zone=zones, language=languages, zone=zones)
@example(datetime(2025, 3, 1, 12, tzinfo=UTC), timedelta(days=-366), "UTC", "en", "UTC")  # a leap day, a year on
@example(datetime(2025, 6, 1, 12, tzinfo=UTC), timedelta(0), "UTC", "ja", "UTC")  # now
@example(datetime(2025, 10, 26, 0, 30, tzinfo=UTC), timedelta(0), "UTC", "en", "Europe/Berlin")  # 02:30 twice over
def test_any_time_reads_as_before(now, offset, value_zone, language, zone):
    value = (now + offset).astimezone(ZoneInfo(value_zone))
    new, old = both(value, now, language, zone)
    assert new == old


def _month_ends(year: int, month: int) -> list[int]:
    last = calendar.monthrange(year, month)[1]
    return sorted({1, 28, min(29, last), min(30, last), last})


@st.composite
def calendar_edges(draw):
    """A value and a now on month ends or leap days, whole months apart give or take a moment: where timesince's
    month counting and its pivot's day clamping decide the answer."""
    year, month = draw(st.integers(1996, 2032)), draw(st.integers(1, 12))
    times = st.sampled_from([(0, 0, 0, 0), (12, 0, 0, 0), (23, 59, 59, 999999)])
    value = datetime(year, month, draw(st.sampled_from(_month_ends(year, month))), *draw(times), tzinfo=UTC)
    months = draw(st.integers(-30, 30))
    year2, month2 = divmod(year * 12 + month - 1 + months, 12)
    now = datetime(year2, month2 + 1, draw(st.sampled_from(_month_ends(year2, month2 + 1))), *draw(times), tzinfo=UTC)
    jitter = draw(st.sampled_from([0, 1, -1, 60, -60, 86400, -86400])) + draw(st.sampled_from([0, 1e-6, -1e-6]))
    return value, now + timedelta(seconds=jitter)


@settings(max_examples=600, deadline=None)
@given(edge=calendar_edges(), value_zone=zones, language=languages)
def test_month_ends_and_leap_days_read_as_before(edge, value_zone, language):
    value, now = edge
    new, old = both(value.astimezone(ZoneInfo(value_zone)), now, language, "UTC")
    assert new == old


@settings(max_examples=300, deadline=None)
@given(now=moments, offset=offsets, default_zone=zones, language=languages, use_tz=st.booleans())
def test_naive_times_read_as_before(now, offset, default_zone, language, use_tz):
    # Naive values are taken in the default zone; without USE_TZ the tooltip shows them as they are.
    with override_settings(TIME_ZONE=default_zone, USE_TZ=use_tz):
        new, old = both((now + offset).replace(tzinfo=None), now, language, default_zone)
    assert new == old


def test_never_reads_as_before():
    for language in ("en", "ja"):
        new, old = both(None, datetime.now(UTC), language, "UTC")
        assert new == old
