"""Sending the outbox: claim what is due, render it, send it through Apprise, record the outcome.

The DeliveryWorker runs on an asyncio loop (the monitor's, `manage.py serve`'s, or `manage.py deliver_alerts`'s)
and never blocks it: database work runs on one dedicated thread, sends on a pool of threads, one send in flight
per channel, so a slow receiver delays nothing but its own channel.

Guarantees:
- Rows are claimed (SELECT … FOR UPDATE SKIP LOCKED, then claimed_until/claim_token) before they are sent,
  so two workers never send one row. A killed worker's claim lapses after its lease (the sends it covers
  plus one send timeout) and the row is sent again: at most one duplicate, never a lost alert.
- A failed send is retried with exponential backoff (RETRY_FIRST doubling up to RETRY_MAX) until
  NOTIFY_MAX_AGE after the event, then the row is marked failed with the reason in last_error.
- Grouping (see ready()): a lone alert waits NOTIFY_GROUP_WINDOW after its event so that others can join it;
  a channel whose pending rows outnumber NOTIFY_GROUP_THRESHOLD is sent once its group has stopped growing
  (GROUP_QUIET without a new row, as this worker saw it) or has waited GROUP_MAX_WAIT. Whenever a channel is
  sent to, all its pending rows go: more than the threshold as one message listing them, otherwise one
  message each. One worker at a time decides for a channel (a lock on its row): each decides on the whole
  group, never on the part of it another worker is not holding.
- The chores (chores.py) run on the same database thread every CHORES_EVERY seconds.

Apprise URLs hold credentials: they are never logged; logs name the channel and its id. The sending itself is
sending.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.db.models import Count, F, Max, Min, Q
from django.utils import timezone

from ..models import Channel, Notification
from . import chores, messages
from .sending import SEND_TIMEOUT, deliver, warm_up

logger = logging.getLogger("vxlanmgr.alerts")

TICK = 0.5
CHORES_EVERY = 5.0
# Channels sent to at once; each has at most one send in flight.
SENDERS = 8
# A group is complete once this worker has seen no new row for this long (never longer than the window). The
# monitor commits a storm one batch of VXLANMGR_PING_CONCURRENCY at a time, ~1.5 s apart (up to ~3.5 s on a
# loaded machine): the quiet must be well longer than one batch's transaction.
GROUP_QUIET = timedelta(seconds=8)
# A group still growing is sent anyway this long after its first event.
GROUP_MAX_WAIT = timedelta(seconds=45)
RETRY_FIRST = 5.0
RETRY_MAX = 600.0
STOP_GRACE = 4.0
DB_BACKOFF_MAX = 30.0
CHUNK = 500



@dataclass
class Batch:
    """The claimed rows of one channel, as the messages they make: one part per message."""

    channel: Channel
    parts: list[list[Notification]]
    # Per part, {VTEP: hosts behind it} (messages.vtep_hosts), counted on the database thread for the sender.
    vtep_hosts: list[dict[str, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


# -- the rules, pure ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """What a channel has waiting: its pending rows, those of them due (not backing off), those due and older
    than the window, its oldest and newest event, and its highest row id."""

    count: int
    due: int
    ripe: int
    oldest: datetime
    newest: datetime
    last_pk: int

    @classmethod
    def of(cls, alerts: list[Notification], now: datetime, window: timedelta) -> Pending:
        due = [alert for alert in alerts if alert.next_attempt_at <= now]
        return cls(
            count=len(alerts), due=len(due), ripe=sum(alert.occurred_at <= now - window for alert in due),
            oldest=min(alert.occurred_at for alert in alerts), newest=max(alert.occurred_at for alert in alerts),
            last_pk=max(alert.pk or 0 for alert in alerts),
        )


def ready(alerts: list[Notification] | Pending, now: datetime, window: timedelta, threshold: int,
          grew_at: datetime | None = None) -> bool:
    """Whether a channel with these pending rows should be sent to now.

    Nothing is sent while every row is backing off. Up to `threshold` rows: each is sent once one has waited
    the window for company. More: they are one incident, sent as one group once it has stopped growing (no
    new row for GROUP_QUIET, capped by the window) or once its oldest event has waited GROUP_MAX_WAIT.

    "Stopped growing" is measured from `grew_at`, when the deciding worker last saw the channel's pending rows
    grow (Growth), and not only from the newest occurred_at: occurred_at is when a batch's transaction began,
    and a storm's batch may commit seconds later (more on a loaded machine): judged by occurred_at alone, a
    group can look quiet while the next batch is still being written, and go out as a first message of two.
    Without `grew_at` (one look, no memory) the newest occurred_at stands in for it.

    The issue's promise, "an alert may wait at most the window to be grouped, never longer", is kept as: the
    window bounds the wait of an alert that has no company (it is sent when it has waited the window), and a
    group that stops growing waits at most min(GROUP_QUIET, window) after its last row; only an incident that
    is still growing is held longer, until it stops, and never longer than GROUP_MAX_WAIT after its first
    event (a storm written over many batches must make one message, not one per batch)."""
    pending = alerts if isinstance(alerts, Pending) else Pending.of(alerts, now, window) if alerts else None
    if pending is None or not pending.due:
        return False
    if pending.count > threshold:
        last_growth = max(pending.newest, grew_at) if grew_at is not None else pending.newest
        return last_growth <= now - min(GROUP_QUIET, window) or pending.oldest <= now - GROUP_MAX_WAIT
    return pending.ripe > 0


class Growth:
    """One worker's memory of each channel's pending rows: how many it last saw (and the highest row id), and
    when that last grew. Kept in memory only: a worker that starts (or restarts) counts what it first sees as
    grown just then, so it waits the quiet time once more; nothing is lost, as the rows are in the outbox.

    Used on the worker's one database thread only."""

    @dataclass
    class Seen:
        count: int
        last_pk: int
        grew_at: datetime

    def __init__(self) -> None:
        self.channels: dict[int, Growth.Seen] = {}

    def observe(self, channel_id: int, count: int, last_pk: int, now: datetime) -> datetime:
        """Record what is pending for a channel now; returns when it last grew. Fewer rows than last time (sent
        by another worker, or given up) is no growth; more rows, or a row newer than any seen, is."""
        seen = self.channels.get(channel_id)
        if seen is None or count > seen.count or last_pk > seen.last_pk:
            seen = self.channels[channel_id] = Growth.Seen(count, last_pk, now)
        else:
            seen.count = count
        return seen.grew_at

    def keep(self, channel_ids: Iterable[int]) -> None:
        """Forget the channels with nothing pending (their next incident starts afresh)."""
        keep = set(channel_ids)
        for channel_id in [channel_id for channel_id in self.channels if channel_id not in keep]:
            del self.channels[channel_id]


def split(alerts: list[Notification], threshold: int) -> list[list[Notification]]:
    return [alerts] if len(alerts) > threshold else [[alert] for alert in alerts]


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MAX)


def lease(messages_count: int, send_timeout: float) -> timedelta:
    return timedelta(seconds=(messages_count + 1) * send_timeout)


# -- the database side, on the worker's database thread -------------------------------------------------------


def _free(now: datetime) -> Q:
    return Q(state=Notification.State.PENDING, channel__enabled=True) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def claim(token: str, limit: int, busy: Iterable[int] = (), send_timeout: float = SEND_TIMEOUT,
          now: datetime | None = None, growth: Growth | None = None) -> list[Batch]:
    """Claim the pending rows of up to `limit` channels (not those in `busy`) that should be sent to now.

    `growth`: the worker's memory of when each channel's pending rows last grew (see ready()); without it, a
    group counts as quiet from its newest occurred_at."""
    fixed = now
    now = fixed or timezone.now()
    window = timedelta(seconds=settings.NOTIFY_GROUP_WINDOW)
    threshold = settings.NOTIFY_GROUP_THRESHOLD
    due = Q(next_attempt_at__lte=now)
    # Unlocked, to pick the channels (and to watch every channel's rows grow, busy ones too); the locked read
    # below decides.
    pending = {
        row["channel_id"]: Pending(row["total"], row["due"], row["ripe"], row["oldest"], row["newest"],
                                   row["last_pk"])
        for row in Notification.objects.filter(_free(now)).values("channel_id").annotate(
            total=Count("pk"), due=Count("pk", filter=due),
            ripe=Count("pk", filter=due & Q(occurred_at__lte=now - window)),
            oldest=Min("occurred_at"), newest=Max("occurred_at"), last_pk=Max("pk"),
            oldest_due=Min("next_attempt_at", filter=due),
        ).order_by("oldest_due")
    }
    busy = set(busy)
    grew = {}
    if growth is not None:
        growth.keep([*pending, *busy])
        grew = {channel_id: growth.observe(channel_id, p.count, p.last_pk, now) for channel_id, p in pending.items()}
    candidates = [channel_id for channel_id, p in pending.items()
                  if channel_id not in busy and ready(p, now, window, threshold, grew.get(channel_id))]
    batches = []
    for channel_id in candidates:
        if len(batches) >= limit:
            break
        now = fixed or timezone.now()
        with transaction.atomic():
            # One worker decides for a channel at a time; another one deciding right now takes all of its rows
            # or none. (Row locks with SKIP LOCKED alone let two workers each read a part of a storm's group,
            # and the older part, looking quiet, went out as a message of its own.) FOR NO KEY UPDATE does not
            # wait for, nor hold up, the monitor writing new rows for the channel.
            if not list(Channel.objects.select_for_update(no_key=True, skip_locked=True).filter(pk=channel_id)
                        .values_list("pk", flat=True)):
                continue
            alerts = list(
                Notification.objects.select_for_update(of=("self",))
                .filter(_free(now), channel_id=channel_id)
                .select_related("channel", "machine").order_by("occurred_at", "pk")
            )
            if not alerts:
                continue
            grew_at = None
            if growth is not None:
                # Rows committed since the unlocked look are growth too: the group is not complete yet.
                grew_at = growth.observe(channel_id, len(alerts), max(alert.pk for alert in alerts), now)
            if not ready(alerts, now, window, threshold, grew_at):
                continue
            parts = split(alerts, threshold)
            until = now + lease(len(parts), send_timeout)
            for ids in _chunks([alert.pk for alert in alerts]):
                Notification.objects.filter(pk__in=ids).update(claimed_until=until, claim_token=token)
        # A group naming every host behind one VTEP names the VTEP instead (messages.vtep_hosts: one query).
        batches.append(Batch(alerts[0].channel, parts, [messages.vtep_hosts(part) if len(part) > 1 else {}
                                                        for part in parts]))
    return batches


def record_sent(alerts: list[Notification], now: datetime | None = None) -> int:
    """Mark delivered rows sent. Even when our claim lapsed meanwhile: a row still pending then need not be
    sent again, and another worker sending it right now finds it sent when it records."""
    now = now or timezone.now()
    done = 0
    for ids in _chunks([alert.pk for alert in alerts]):
        done += Notification.objects.filter(pk__in=ids, state=Notification.State.PENDING).update(
            state=Notification.State.SENT, sent_at=now, attempts=F("attempts") + 1, claimed_until=None,
            claim_token="", last_error="",
        )
    return done


def record_failed(token: str, alerts: list[Notification], error: str, now: datetime | None = None) -> int:
    """Back off the rows of a failed send that are still ours; those past NOTIFY_MAX_AGE become failed.
    Returns how many became failed."""
    now = now or timezone.now()
    max_age = timedelta(seconds=settings.NOTIFY_MAX_AGE)
    given_up = 0
    with transaction.atomic():
        for ids in _chunks([alert.pk for alert in alerts]):
            mine = list(Notification.objects.select_for_update().filter(
                pk__in=ids, claim_token=token, state=Notification.State.PENDING))
            for alert in mine:
                alert.attempts += 1
                alert.last_error = error
                alert.claimed_until, alert.claim_token = None, ""
                deadline = alert.occurred_at + max_age
                if now >= deadline:
                    alert.state = Notification.State.FAILED
                    given_up += 1
                else:
                    # The last try comes at the deadline itself, not a backoff step after it.
                    alert.next_attempt_at = min(now + timedelta(seconds=retry_delay(alert.attempts)), deadline)
            Notification.objects.bulk_update(
                mine, ["attempts", "last_error", "claimed_until", "claim_token", "state", "next_attempt_at"],
            )
    return given_up


def release(token: str, alerts: list[Notification]) -> None:
    """Give back claimed rows unsent (the worker is stopping): another worker may take them at once."""
    for ids in _chunks([alert.pk for alert in alerts]):
        Notification.objects.filter(pk__in=ids, claim_token=token, state=Notification.State.PENDING).update(
            claimed_until=None, claim_token="",
        )


# -- the worker -----------------------------------------------------------------------------------------------


class DeliveryWorker:
    def __init__(self, name: str | None = None, senders: int = SENDERS, send_timeout: float = SEND_TIMEOUT):
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.token = uuid.uuid4().hex
        self.senders = senders
        self.send_timeout = send_timeout
        self.db_executor = ThreadPoolExecutor(1, thread_name_prefix="alerts-db")
        self.send_executor = ThreadPoolExecutor(senders, thread_name_prefix="alerts-send")
        # Channel id -> the task sending to it: one at a time per channel.
        self.sending: dict[int, asyncio.Task] = {}
        self.shutdown = asyncio.Event()
        self.db_down_since: float | None = None
        self.stats = {"sent": 0, "failed": 0}
        # When each channel's pending rows last grew, as this worker saw them (ready()).
        self.growth = Growth()

    async def db(self, fn, *args, **kwargs):
        def call():
            close_old_connections()
            return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.db_executor, call)

    async def run(self, shutdown: asyncio.Event | None = None) -> None:
        """Deliver until `shutdown` is set; then let sends in flight finish within STOP_GRACE."""
        if shutdown is not None:
            self.shutdown = shutdown
        last_chores = float("-inf")
        backoff = 1.0
        try:
            await asyncio.get_running_loop().run_in_executor(self.send_executor, warm_up)
            logger.info("alert delivery %s started", self.name)
            while not self.shutdown.is_set():
                try:
                    if time.monotonic() - last_chores >= CHORES_EVERY:
                        await self.chores()
                        last_chores = time.monotonic()
                    did_work = await self.step()
                    self._db_ok()
                    backoff = 1.0
                except Exception as exc:
                    if isinstance(exc, DatabaseError):
                        self._db_failed(exc)
                    else:
                        logger.exception("alert delivery step failed")
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, DB_BACKOFF_MAX)
                    continue
                if not did_work:
                    await self._sleep(TICK)
        finally:
            await self._drain()
            with contextlib.suppress(Exception):
                await self.db(connections.close_all)
            self.db_executor.shutdown(wait=False)
            self.send_executor.shutdown(wait=False)
            logger.info("alert delivery %s stopped", self.name)

    def stop(self) -> None:
        self.shutdown.set()

    async def step(self) -> bool:
        """Claim the channels that should be sent to now and start sending to them; True if any."""
        free = self.senders - len(self.sending)
        if free <= 0:
            return False
        batches = await self.db(claim, self.token, free, set(self.sending), self.send_timeout, growth=self.growth)
        for batch in batches:
            channel_id = batch.channel.pk
            task = asyncio.create_task(self._deliver(batch))
            self.sending[channel_id] = task
            task.add_done_callback(lambda _task, channel_id=channel_id: self.sending.pop(channel_id, None))
        return bool(batches)

    async def chores(self) -> None:
        stable = await self.db(chores.conclude_flapping)
        ended = await self.db(chores.conclude_silences)
        expired = await self.db(chores.expire_disabled)
        if stable or ended or expired:
            logger.info("alerts: %d machines stable again, %d silences ended, %d alerts of disabled channels "
                        "expired", stable, ended, expired)

    async def _deliver(self, batch: Batch) -> None:
        channel = batch.channel
        loop = asyncio.get_running_loop()
        remaining = list(batch.parts)
        vteps = dict(zip(map(id, batch.parts), batch.vtep_hosts, strict=False))
        try:
            while remaining and not self.shutdown.is_set():
                part = remaining.pop(0)
                ok, error = await loop.run_in_executor(
                    self.send_executor, deliver, channel, part, self.send_timeout, vteps.get(id(part)),
                )
                if ok:
                    await self.db(record_sent, part)
                    self.stats["sent"] += len(part)
                    logger.info("alert channel %r (#%d): sent %s", channel.name, channel.pk, _describe(part))
                    continue
                # The channel is failing: the rest of the batch backs off with this part instead of being
                # tried right after it.
                failing = [alert for rest in [part, *remaining] for alert in rest]
                remaining = []
                given_up = await self.db(record_failed, self.token, failing, error)
                self.stats["failed"] += given_up
                logger.warning("alert channel %r (#%d): could not send %s: %s%s", channel.name, channel.pk,
                               _describe(failing), error, f"; {given_up} given up" if given_up else "; will retry")
        except DatabaseError as exc:
            # Unrecorded rows stay claimed; the lease lapses and they are sent again.
            self._db_failed(exc)
        except Exception:
            logger.exception("alert channel %r (#%d): delivery failed", channel.name, channel.pk)
        finally:
            if remaining:
                # If this fails too, the claims lapse on their own.
                with contextlib.suppress(Exception):
                    await self.db(release, self.token, [alert for part in remaining for alert in part])

    async def _drain(self) -> None:
        tasks = list(self.sending.values())
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.shutdown.wait(), seconds)
        except TimeoutError:
            pass

    def _db_failed(self, exc: Exception) -> None:
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            logger.error("alert delivery: database unavailable, retrying with backoff: %s", exc)

    def _db_ok(self) -> None:
        if self.db_down_since is not None:
            logger.warning("alert delivery: database reachable again after %.0f s",
                           time.monotonic() - self.db_down_since)
            self.db_down_since = None


def _describe(alerts: list[Notification]) -> str:
    if len(alerts) == 1:
        alert = alerts[0]
        return f"{alert.kind} of {alert.hostname or alert.ip_address or '-'}"
    return f"a group of {len(alerts)} alerts"
