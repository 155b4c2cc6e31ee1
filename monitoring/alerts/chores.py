"""The delivery worker's periodic chores (every CHORES_EVERY seconds, on its database thread): alerts that come
from the passing of time rather than from a change: "stable again" when a flapping machine has settled, "still
unreachable" when a silence ends, and giving up on the alerts of disabled channels."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from machines.models import Machine
from machines.status import Status

from ..models import AlertKind, FlapState, Notification, Silence
from . import messages, outbox


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
