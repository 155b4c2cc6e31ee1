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
- Grouping: a row waits up to NOTIFY_GROUP_WINDOW after its event so that others can join it; a channel
  whose pending rows outnumber NOTIFY_GROUP_THRESHOLD is sent as soon as no new row has come for GROUP_QUIET
  (a storm still being written keeps growing its one group, for GROUP_MAX_WAIT at most). Whenever a channel
  is sent to, all its pending rows go: more than the threshold as one message listing them, otherwise one
  message each.

Apprise URLs hold credentials: they are never logged; logs name the channel and its id.
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from machines.models import Machine
from machines.status import Status

from ..models import AlertKind, Channel, FlapState, Notification, Silence
from . import messages, outbox

logger = logging.getLogger("vxlanmgr.alerts")

TICK = 0.5
CHORES_EVERY = 5.0
# Channels sent to at once; each has at most one send in flight.
SENDERS = 8
# One Apprise call may take this long (connect, read, retries); it also sizes the claim's lease.
SEND_TIMEOUT = 30.0
# Measured from the alerts' occurred_at, which a batch's transaction sets when it starts: a storm's batches
# commit ~1.5 s apart with rows already ~1.5 s old (longer on a loaded machine), so "quiet" must be well
# longer than both together, and still shorter than the default window.
GROUP_QUIET = timedelta(seconds=8)
GROUP_MAX_WAIT = timedelta(seconds=45)
RETRY_FIRST = 5.0
RETRY_MAX = 600.0
STOP_GRACE = 4.0
DB_BACKOFF_MAX = 30.0
CHUNK = 500

_FAILURE = {AlertKind.UNREACHABLE, AlertKind.MONITOR_DOWN, AlertKind.FLAPPING, AlertKind.STILL_UNREACHABLE}
_SUCCESS = {AlertKind.RECOVERED, AlertKind.MONITOR_BACK, AlertKind.STABLE}


@dataclass
class Batch:
    """The claimed rows of one channel, as the messages they make: one part per message."""

    channel: Channel
    parts: list[list[Notification]]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


# -- the rules, pure ------------------------------------------------------------------------------------------


def ready(alerts: list[Notification], now: datetime, window: timedelta, threshold: int) -> bool:
    """Whether a channel with these pending rows should be sent to now: something is due, and either it has
    waited the grouping window, or there are enough rows to make a group and the group has stopped growing
    (GROUP_QUIET without a new row; a storm of 10,000 changes takes the monitor several batches to write, and
    makes one message, not one per batch), or the group has waited GROUP_MAX_WAIT."""
    due = [alert for alert in alerts if alert.next_attempt_at <= now]
    if not due:
        return False
    if len(alerts) > threshold:
        newest = max(alert.occurred_at for alert in alerts)
        oldest = min(alert.occurred_at for alert in alerts)
        # Never quieter than the window: a group that has stopped growing waits no longer than a lone alert.
        return newest <= now - min(GROUP_QUIET, window) or oldest <= now - GROUP_MAX_WAIT
    return any(alert.occurred_at <= now - window for alert in due)


def split(alerts: list[Notification], threshold: int) -> list[list[Notification]]:
    return [alerts] if len(alerts) > threshold else [[alert] for alert in alerts]


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MAX)


def lease(messages_count: int, send_timeout: float) -> timedelta:
    return timedelta(seconds=(messages_count + 1) * send_timeout)


def notify_type(alerts: list[Notification]) -> str:
    kinds = {alert.kind for alert in alerts}
    if kinds & _FAILURE:
        return apprise.NotifyType.FAILURE
    if AlertKind.MAC_CHANGED in kinds:
        return apprise.NotifyType.WARNING
    if kinds <= _SUCCESS:
        return apprise.NotifyType.SUCCESS
    return apprise.NotifyType.INFO


# -- sending, on a sender thread ------------------------------------------------------------------------------


def send(url: str, title: str, body: str, kind: str = apprise.NotifyType.INFO,
         timeout: float = SEND_TIMEOUT) -> tuple[bool, str]:
    """Send one message to one Apprise URL: (delivered, why not). The reason never contains the URL's
    credentials."""
    app = apprise.Apprise()
    if not app.add(url):
        return False, "the Apprise URL is not valid, or its service is not available here"
    try:
        # Plain text: Apprise escapes or converts it for services that want HTML or Markdown.
        with app.notify(body=body, title=title, notify_type=kind, body_format=apprise.NotifyFormat.TEXT,
                        timeout=timeout) as result:
            if result:
                return True, ""
            reasons = [entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}]
            reason = "; ".join(dict.fromkeys(reasons)) or f"Apprise reported {result.status.name.lower()}"
            if result.status == apprise.AppriseResultStatus.TIMEOUT:
                reason = f"no answer within {timeout:g} s; {reason}"
    except Exception as exc:
        # A plugin's bug must not stop the worker; its text may hold the URL.
        reason = f"Apprise failed: {type(exc).__name__}"
    return False, redact(reason, url)


def deliver(channel: Channel, alerts: list[Notification], timeout: float) -> tuple[bool, str]:
    message = messages.render(channel, alerts)
    return send(channel.url, message.title, message.body, notify_type(alerts), timeout)


def redact(text: str, url: str) -> str:
    """Remove from `text` whatever in `url` could be a credential: user, password, and the tokens many
    services carry in the host, path or query (slack://TokenA/TokenB/TokenC)."""
    try:
        parts = urlsplit(url)
        username, password, host = parts.username, parts.password, parts.hostname or ""
    except ValueError:
        return text.replace(url, "***")
    secrets = {url, unquote(parts.netloc.rpartition("@")[0])}
    secrets |= {value for value in (username, password) if value and len(value) >= 4}
    # Short pieces and names (a host name with dots, an e-mail address) are no secrets, and replacing them
    # would garble the reason.
    pieces = [host, *(unquote(segment) for segment in parts.path.split("/"))]
    pieces += [value for _key, value in parse_qsl(parts.query)]
    secrets |= {
        piece for piece in pieces if len(piece) >= 6 and not {".", "@", ":"} & set(piece) and piece != "localhost"
    }
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# -- the database side, on the worker's database thread -------------------------------------------------------


def _free(now: datetime) -> Q:
    return Q(state=Notification.State.PENDING, channel__enabled=True) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def claim(token: str, limit: int, busy: Iterable[int] = (), send_timeout: float = SEND_TIMEOUT,
          now: datetime | None = None) -> list[Batch]:
    """Claim the pending rows of up to `limit` channels (not those in `busy`) that should be sent to now."""
    now = now or timezone.now()
    window = timedelta(seconds=settings.NOTIFY_GROUP_WINDOW)
    threshold = settings.NOTIFY_GROUP_THRESHOLD
    due = Q(next_attempt_at__lte=now)
    # Unlocked, to pick the channels; the locked read below decides.
    candidates = (
        Notification.objects.filter(_free(now)).exclude(channel_id__in=list(busy))
        .values("channel_id")
        .annotate(
            total=Count("pk"), due=Count("pk", filter=due),
            ripe=Count("pk", filter=due & Q(occurred_at__lte=now - window)),
            oldest=Min("next_attempt_at", filter=due),
        )
        .filter(Q(ripe__gt=0) | Q(due__gt=0, total__gt=threshold))
        .order_by("oldest")
    )
    batches = []
    for channel_id in [row["channel_id"] for row in candidates]:
        if len(batches) >= limit:
            break
        with transaction.atomic():
            alerts = list(
                Notification.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(_free(now), channel_id=channel_id)
                .select_related("channel").order_by("occurred_at", "pk")
            )
            if not ready(alerts, now, window, threshold):
                continue
            parts = split(alerts, threshold)
            until = now + lease(len(parts), send_timeout)
            for ids in _chunks([alert.pk for alert in alerts]):
                Notification.objects.filter(pk__in=ids).update(claimed_until=until, claim_token=token)
        batches.append(Batch(alerts[0].channel, parts))
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


def conclude_flapping(now: datetime | None = None) -> int:
    """Machines announced as flapping that have not changed for FLAP_STABLE_MINUTES: one "stable" alert each,
    with their current status, and they are no longer flapping."""
    now = now or timezone.now()
    minutes = settings.FLAP_STABLE_MINUTES
    stable = FlapState.objects.filter(last_change_at__lte=now - timedelta(minutes=minutes))
    # Looked at first without a transaction: on SQLite every transaction takes the write lock.
    if not stable.exists():
        return 0
    with transaction.atomic():
        flaps = list(stable.select_for_update(skip_locked=True))
        if not flaps:
            return 0
        machines = Machine.objects.in_bulk([flap.machine_id for flap in flaps])
        channels, silences = outbox.enabled_channels(), outbox.active_silences(now)
        rows = []
        for machine in machines.values():
            detail = f"no state change for {minutes:g} minutes; now {machine.status}"
            rows += outbox.enqueue(AlertKind.STABLE, outbox.Subject.of(machine), detail, now, channels, silences)
        Notification.objects.bulk_create(rows)
        FlapState.objects.filter(pk__in=[flap.pk for flap in flaps]).delete()
    return len(flaps)


def conclude_silences(now: datetime | None = None) -> int:
    """Silences that ended: every machine in their scope still unreachable, and not silenced by another,
    gets one "still unreachable" alert; the silences are marked concluded in the same transaction."""
    now = now or timezone.now()
    over = Silence.objects.filter(ends_at__lte=now, concluded_at__isnull=True)
    if not over.exists():
        return 0
    with transaction.atomic():
        ended = list(over.select_for_update(skip_locked=True))
        if not ended:
            return 0
        scope = Q(pk__in=[])
        for silence in ended:
            if silence.machine_id is not None:
                scope |= Q(pk=silence.machine_id)
            elif silence.vni is not None:
                scope |= Q(vni=silence.vni)
            else:
                scope = Q()
                break
        channels, silences = outbox.enabled_channels(), outbox.active_silences(now)
        rows = []
        for machine in Machine.objects.filter(scope, status=Status.UNREACHABLE).order_by("pk"):
            since = machine.unreachable_since
            detail = f"unreachable since {messages.when(since)}" if since else ""
            # enqueue writes nothing for a machine another silence still covers.
            rows += outbox.enqueue(
                AlertKind.STILL_UNREACHABLE, outbox.Subject.of(machine), detail, now, channels, silences,
            )
        Notification.objects.bulk_create(rows)
        Silence.objects.filter(pk__in=[silence.pk for silence in ended]).update(concluded_at=now)
    return len(ended)


def expire_disabled(now: datetime | None = None) -> int:
    """Rows of disabled channels are not sent; past NOTIFY_MAX_AGE they are failed like any other."""
    now = now or timezone.now()
    expired = Notification.objects.filter(
        state=Notification.State.PENDING, channel__enabled=False,
        occurred_at__lt=now - timedelta(seconds=settings.NOTIFY_MAX_AGE),
    )
    if not expired.exists():
        return 0
    return expired.update(state=Notification.State.FAILED, last_error="the channel is disabled",
                          claimed_until=None, claim_token="")


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
            # Apprise finds its services on first use (about a second): not on the first alert's time.
            await asyncio.get_running_loop().run_in_executor(
                self.send_executor, apprise.Apprise.instantiate, "json://localhost",
            )
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
        batches = await self.db(claim, self.token, free, set(self.sending), self.send_timeout)
        for batch in batches:
            channel_id = batch.channel.pk
            task = asyncio.create_task(self._deliver(batch))
            self.sending[channel_id] = task
            task.add_done_callback(lambda _task, channel_id=channel_id: self.sending.pop(channel_id, None))
        return bool(batches)

    async def chores(self) -> None:
        stable = await self.db(conclude_flapping)
        ended = await self.db(conclude_silences)
        expired = await self.db(expire_disabled)
        if stable or ended or expired:
            logger.info("alerts: %d machines stable again, %d silences ended, %d alerts of disabled channels "
                        "expired", stable, ended, expired)

    async def _deliver(self, batch: Batch) -> None:
        channel = batch.channel
        loop = asyncio.get_running_loop()
        remaining = list(batch.parts)
        try:
            while remaining and not self.shutdown.is_set():
                part = remaining.pop(0)
                ok, error = await loop.run_in_executor(
                    self.send_executor, deliver, channel, part, self.send_timeout,
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
