"""`{% history_charts machine %}`: the machine page's round trip and loss over the last day, week, month or year.

The range is a plain link (`?history=7d`), so the page needs no script. Each range reads the coarsest tier that
covers it and the finer tiers after that tier's last bucket: an hour is folded only after it ends, a day after
its last hour, and the chart should still reach up to now. Times are labelled in the active time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django import template
from django.utils import formats, timezone
from django.utils.dateformat import format as date_format
from django.utils.timesince import timesince
from django.utils.translation import gettext, gettext_lazy, ngettext, pgettext_lazy

from monitoring import charts, series
from monitoring.history import DAY, HOUR, floor

register = template.Library()


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    span: timedelta
    resolution: str
    slot: timedelta  # what one drawn point covers: raw results are too many to draw one by one
    tick_unit: str
    tick_step: int
    tick_format: str  # a Django date format


RANGES = (
    Range("24h", gettext_lazy("24 hours"), timedelta(hours=24), "raw", timedelta(minutes=5), "hour", 3,
          pgettext_lazy("history chart: Django date format of an hour tick", "H:i")),
    Range("7d", gettext_lazy("7 days"), timedelta(days=7), "hour", HOUR, "day", 1,
          pgettext_lazy("history chart: Django date format of a day tick in a week", "D j")),
    Range("30d", gettext_lazy("30 days"), timedelta(days=30), "hour", 2 * HOUR, "day", 3,
          pgettext_lazy("history chart: Django date format of a day tick in a month", "M j")),
    Range("1y", gettext_lazy("1 year"), timedelta(days=365), "day", DAY, "month", 1,
          pgettext_lazy("history chart: Django date format of a month tick", "M")),
)
BY_KEY = {chosen.key: chosen for chosen in RANGES}
FINER = {"day": "hour", "hour": "raw"}
PERIOD = {"day": DAY, "hour": HOUR}
LAYOUT = {
    "width": charts.WIDTH, "height": charts.HEIGHT, "marks": charts.MARKS, "axis_y": charts.HEIGHT - 6,
    "rtt_top": charts.RTT_TOP, "rtt_height": charts.RTT_HEIGHT, "loss_top": charts.LOSS_TOP,
    "loss_height": charts.LOSS_HEIGHT, "plots_height": charts.LOSS_TOP + charts.LOSS_HEIGHT - charts.RTT_TOP,
}


@register.inclusion_tag("monitoring/_history_charts.html", takes_context=True)
def history_charts(context, machine) -> dict:
    request = context.get("request")
    chosen = BY_KEY.get(request.GET.get("history", "") if request else "", RANGES[0])
    return {"ranges": RANGES, "chosen": chosen, "chart": chart(machine.pk, chosen, timezone.now()), "layout": LAYOUT}


def chart(machine_id: int, chosen: Range, now: datetime) -> dict:
    since = floor(now - chosen.span, chosen.slot)
    grid = charts.slots(samples(machine_id, chosen.resolution, since, now), since, now, chosen.slot)
    outages = series.outages(machine_id, since, now)
    whole = charts.total(grid)
    if not whole.checks and not outages:
        return {"summary": gettext("No checks in this period.")}
    scale = charts.TimeScale(since, now)
    ticks = charts.time_ticks(since, now, timezone.get_current_timezone(), chosen.tick_unit, chosen.tick_step)
    top, step = charts.nice_scale(max((slot.rtt_max for slot in grid if slot.rtt_max is not None), default=None))
    band, mean = charts.rtt_paths(grid, scale, top)
    rtt_ticks = [_y_tick(charts.RTT_TOP, charts.RTT_HEIGHT, value / top, f"{_tick_number(value)} ms")
                 for value in charts.value_ticks(top, step)]
    loss_ticks = [_y_tick(charts.LOSS_TOP, charts.LOSS_HEIGHT, share, _percent(share)) for share in (0, 0.5, 1)]
    return {
        "band": band, "mean": mean, "loss": charts.loss_path(grid, scale),
        "rtt_ticks": rtt_ticks, "loss_ticks": loss_ticks,
        # None at 0: the data runs along there, and the axis is plainly from zero.
        "value_labels": rtt_ticks[1:] + loss_ticks[1:],
        "time_ticks": [_time_tick(scale, moment, major, chosen.tick_format) for moment, major in ticks],
        "outages": [{"x": span.x, "width": span.width, "title": _outage_title(span.start, span.end, now)}
                    for span in charts.spans(outages, scale)],
        "hits": [{"x": x, "width": width, "title": _slot_title(slot)} for x, width, slot in charts.hits(grid, scale)],
        "summary": _summary(whole, outages, now),
    }


def samples(machine_id: int, resolution: str, since: datetime, until: datetime) -> list[charts.Sample]:
    found = []
    while resolution != "raw":
        rows = series.points(machine_id, resolution, since, until)
        found += [_from_bucket(row) for row in rows]
        if rows:
            since = rows[-1]["start"] + PERIOD[resolution]
        resolution = FINER[resolution]
    return found + [_from_raw(row) for row in series.points(machine_id, "raw", since, until)]


def _from_bucket(row: dict) -> charts.Sample:
    mean = row["rtt_mean_ms"]
    return charts.Sample(row["start"], row["checks"], row["answered"], (row["loss"] or 0.0) * row["checks"],
                         row["rtt_min_ms"], None if mean is None else mean * row["answered"], row["rtt_max_ms"])


def _from_raw(row: dict) -> charts.Sample:
    rtt = row["rtt_ms"]
    return charts.Sample(row["at"], 1, int(row["ok"]), row["loss"], rtt, rtt, rtt)


# -- words and numbers ------------------------------------------------------------------------------------------


def _y_tick(top: int, height: int, share: float, text: str) -> dict:
    y = round(height - share * height, 1)
    # Labels sit just above their grid line, so the top one uses the room above its plot.
    return {"y": y, "label_y": round(top + y - 3, 1), "label": text}


def _time_tick(scale: charts.TimeScale, moment: datetime, major: bool, fmt: str) -> dict:
    percent = scale.percent(moment)
    anchor = "start" if percent < 4 else "end" if percent > 96 else "middle"
    return {"x": scale.x(moment), "percent": percent, "label": date_format(moment, str(fmt)), "major": major,
            "anchor": anchor}


def _number(value: float, decimals: int) -> str:
    # What formats.number_format gives without grouping, at a fraction of its cost: a chart has a thousand numbers.
    return f"{value:.{decimals}f}".replace(".", formats.get_format("DECIMAL_SEPARATOR"))


def _tick_number(value: float) -> str:
    return _number(value, next((d for d in range(3) if abs(round(value, d) - value) < 1e-9), 3))


def _ms(value: float) -> str:
    return _number(value, 2 if value < 10 else 1 if value < 100 else 0)


def _percent(share: float) -> str:
    value = share * 100
    # A decimal near 0 and 100 %, so 0.4 % loss is not "0%" and 99.6 % answered not "100%".
    return f"{_number(value, 1 if 0 < value < 10 or 90 < value < 100 else 0)}%"


def _when(start: datetime, end: datetime) -> str:
    start, end = timezone.localtime(start), timezone.localtime(end)
    # The date once when both ends fall on the same local day.
    return f"{start:%Y-%m-%d %H:%M}–{end:{'%H:%M' if end.date() == start.date() else '%Y-%m-%d %H:%M'}}"


def _slot_title(slot: charts.Slot) -> str:
    checks = ngettext("%(count)s check", "%(count)s checks", slot.checks) % {"count": slot.checks}
    if slot.rtt_mean is None:
        return gettext("%(when)s: %(checks)s, no answer") % {"when": _when(slot.start, slot.end), "checks": checks}
    return gettext("%(when)s: %(checks)s, loss %(loss)s, round trip %(mean)s ms (%(min)s–%(max)s ms)") % {
        "when": _when(slot.start, slot.end), "checks": checks, "loss": _percent(slot.loss),
        "mean": _ms(slot.rtt_mean), "min": _ms(slot.rtt_min), "max": _ms(slot.rtt_max),
    }


def _outage_title(start: datetime, end: datetime | None, now: datetime) -> str:
    if end is None:
        return gettext("Unreachable since %(start)s (%(duration)s)") % {
            "start": f"{timezone.localtime(start):%Y-%m-%d %H:%M}", "duration": timesince(start, now)}
    return gettext("Unreachable %(when)s (%(duration)s)") % {
        "when": _when(start, end), "duration": timesince(start, end)}


def _summary(whole: charts.Slot, outages: list, now: datetime) -> str:
    parts = []
    if whole.checks:
        parts.append(ngettext("%(count)s check, %(answered)s answered.", "%(count)s checks, %(answered)s answered.",
                              whole.checks) % {"count": formats.number_format(whole.checks, 0, force_grouping=True),
                                               "answered": _percent(whole.answered / whole.checks)})
    else:
        parts.append(gettext("No checks in this period."))
    if whole.rtt_mean is not None:
        parts.append(gettext("Round trip %(mean)s ms on average, from %(min)s to %(max)s ms.") % {
            "mean": _ms(whole.rtt_mean), "min": _ms(whole.rtt_min), "max": _ms(whole.rtt_max)})
    if outages:
        down = sum(((end or now) - start for start, end in outages), timedelta())
        parts.append(ngettext("Unreachable %(count)s time, for %(duration)s.",
                              "Unreachable %(count)s times, for %(duration)s.", len(outages))
                     % {"count": len(outages), "duration": timesince(now - down, now)})
    else:
        parts.append(gettext("No outages."))
    return " ".join(parts)
