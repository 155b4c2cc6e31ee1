"""monitor_down / monitor_back, decided by the web processes: a dead monitor cannot say it is dead.

Every web process looks; a row lock on the shared Watch row makes exactly one of them write each alert.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from .. import broadcast
from ..coverage import live_monitors
from ..models import AlertKind, MonitorHeartbeat, Watch
from . import outbox

logger = logging.getLogger("vxlanmgr.alerts")

EVERY = 10.0
NAME = "monitor_down"


def monitors_alive(now: datetime) -> bool:
    """A monitor beat within VXLANMGR_MONITOR_STALE seconds and can send pings."""
    fresh = now - timedelta(seconds=settings.MONITOR_STALE)
    return MonitorHeartbeat.objects.filter(last_beat_at__gte=fresh, error="").exists()


def check(now: datetime | None = None, watching_since: datetime | None = None) -> str | None:
    """Compare the heartbeats with the shared state; write monitor_down or monitor_back when it changes.

    `watching_since` is when this process started looking: nobody is declared down before a monitor had
    the stale time to start beating.
    """
    now = now or timezone.now()
    alive = monitors_alive(now)
    if not alive and watching_since and now - watching_since < timedelta(seconds=settings.MONITOR_STALE):
        return None
    with transaction.atomic():
        watch, _created = Watch.objects.select_for_update().get_or_create(name=NAME)
        if not alive and watch.active_since is None:
            last = MonitorHeartbeat.objects.order_by("-last_beat_at").values_list("last_beat_at", flat=True).first()
            detail = (f"no monitor heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC" if last
                      else "no monitor has ever reported")
            watch.active_since = now
            watch.save(update_fields=["active_since"])
            outbox.write(AlertKind.MONITOR_DOWN, None, detail, now)
            return AlertKind.MONITOR_DOWN
        if alive and watch.active_since is not None:
            detail = f"monitoring resumed after {_duration(now - watch.active_since)} without a monitor"
            watch.active_since = None
            watch.save(update_fields=["active_since"])
            outbox.write(AlertKind.MONITOR_BACK, None, detail, now)
            return AlertKind.MONITOR_BACK
    return None


def coverage_signature() -> tuple:
    """Which monitors count and what they are cut off from: when it changes, "not being checked" marks and
    banners change on every dashboard."""
    return tuple(sorted((monitor.name, str(monitor.scope), tuple(sorted(monitor.isolation)))
                        for monitor in live_monitors()))


async def run(stop: asyncio.Event | None = None) -> None:
    """Look every EVERY seconds until stopped; a database outage is logged once and waited out."""
    started = timezone.now()
    failing = False
    coverage = None
    while stop is None or not stop.is_set():
        try:
            changed = await sync_to_async(check, thread_sensitive=False)(watching_since=started)
            if changed:
                logger.warning("alert: %s", changed)
            now_covering = await sync_to_async(coverage_signature, thread_sensitive=False)()
            if coverage is not None and now_covering != coverage:
                # A monitor went stale or came, so open dashboards fetch their list (banner and marks) again.
                await broadcast.push(broadcast.event(created=True))
            coverage = now_covering
            failing = False
        except DatabaseError as exc:
            if not failing:
                logger.error("monitor watch: database unavailable: %s", exc)
            failing = True
        if stop is None:
            await asyncio.sleep(EVERY)
        else:
            try:
                await asyncio.wait_for(stop.wait(), EVERY)
            except TimeoutError:
                pass


def _duration(delta: timedelta) -> str:
    return str(timedelta(seconds=int(delta.total_seconds())))
