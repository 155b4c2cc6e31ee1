"""`{% relative_time %}` renders exactly what the template it replaced rendered, in every language and zone."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import engines
from django.utils import timezone, translation

from machines.templatetags.machine_time import relative_time

# machines/_time.html as it was: an include with three filters per timestamp, the dashboard's hot path.
ORIGINAL = (
    "{% load i18n humanize tz %}{% if value %}<time datetime=\"{{ value|utc|date:'c' }}\" "
    "title=\"{{ value|date:'Y-m-d H:i:s T' }}\" class=\"js-relative\">{{ value|naturaltime }}</time>"
    '{% else %}<span class="muted">{% translate "never" %}</span>{% endif %}'
)
NOW = timezone.now()
VALUES = [
    None,
    NOW,
    NOW.replace(microsecond=0) - timedelta(minutes=3),
    NOW - timedelta(days=400, hours=5),
    NOW + timedelta(seconds=59),
    datetime(2025, 10, 26, 0, 30, tzinfo=UTC),  # 02:30 in Berlin, ambiguous: no zone name
    datetime(2025, 3, 30, 1, 15, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0),  # naive
    datetime(2025, 10, 26, 2, 30),  # naive and ambiguous in Berlin
    datetime(2025, 3, 30, 2, 30),  # naive and nonexistent in Berlin
    datetime(987, 6, 5, 4, 3, 2, tzinfo=UTC),  # a year of three digits
]


@pytest.mark.parametrize("language", ["en", "ja"])
@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/St_Johns"])
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_same_markup_as_the_template(language, zone, value):
    original = engines["django"].from_string(ORIGINAL)
    with translation.override(language), timezone.override(zone):
        assert relative_time(value) == original.render({"value": value})


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Tokyo"])
def test_the_same_markup_with_another_default_zone(zone, settings):
    settings.TIME_ZONE = zone
    original = engines["django"].from_string(ORIGINAL)
    with translation.override("en"):
        for value in VALUES:
            assert relative_time(value) == original.render({"value": value})


def test_every_page_template_uses_it():
    template = engines["django"].from_string("{% include 'machines/_time.html' with value=v %}")
    with translation.override("en"):
        assert template.render({"v": None}).strip() == '<span class="muted">never</span>'
        # Relative to the clock now, not to the module's NOW: the suite may reach this test minutes later.
        three_minutes_ago = timezone.now() - timedelta(minutes=3, seconds=5)
        assert 'class="js-relative">3\xa0minutes ago</time>' in template.render({"v": three_minutes_ago})
