"""`{% relative_time %}`: what an operator reads and what the page's script reads, in every language and zone."""

from datetime import UTC, datetime, timedelta

import pytest
from django.template import engines
from django.utils import timezone, translation

from machines.templatetags.machine_time import relative_time


def render(value, zone="UTC", language="en") -> str:
    with translation.override(language), timezone.override(zone):
        return relative_time(value)


def test_a_missing_time_reads_never_in_each_language():
    assert render(None) == '<span class="muted">never</span>'
    assert render(None, language="ja") == '<span class="muted">なし</span>'


@pytest.mark.parametrize(
    "zone,title",
    [
        ("UTC", "2025-06-01 12:00:00 UTC"),
        ("Asia/Tokyo", "2025-06-01 21:00:00 JST"),
        ("America/St_Johns", "2025-06-01 09:30:00 NDT"),
    ],
)
def test_the_tooltip_is_local_and_the_attribute_utc(zone, title):
    html = render(datetime(2025, 6, 1, 12, 0, tzinfo=UTC), zone)
    assert 'datetime="2025-06-01T12:00:00+00:00"' in html
    assert f'title="{title}"' in html


def test_an_ambiguous_local_time_has_no_zone_name():
    # 00:30 UTC on 2025-10-26 is 02:30 in Berlin twice over (the clocks go back).
    html = render(datetime(2025, 10, 26, 0, 30, tzinfo=UTC), "Europe/Berlin")
    assert 'title="2025-10-26 02:30:00 "' in html


def test_a_naive_time_is_taken_in_the_default_zone(settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    assert 'datetime="2024-02-29T03:00:00+00:00"' in render(datetime(2024, 2, 29, 12, 0), "Asia/Tokyo")


def test_the_text_is_relative_and_translated():
    three_minutes_ago = timezone.now() - timedelta(minutes=3, seconds=5)
    assert '">3\xa0minutes ago</time>' in render(three_minutes_ago)
    assert ">3分前</time>" in render(three_minutes_ago, language="ja")


def test_the_page_templates_render_it():
    template = engines["django"].from_string("{% load machine_time %}{% relative_time v %}")
    with translation.override("en"):
        assert template.render({"v": None}).strip() == '<span class="muted">never</span>'
