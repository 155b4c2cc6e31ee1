"""Writing alerts: one outbox row per channel that wants the event, in the caller's transaction, so an alert
exists exactly when the change that causes it was committed.

Also decided here, at the moment of the change: silences (nothing is written) and flapping (one "flapping"
alert, then nothing until the machine is stable; chores.py announces "stable again").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from machines.models import Machine, MachineEvent

from ..models import AlertKind, Channel, FlapState, Notification, Silence

STATE_CHANGES = (MachineEvent.Kind.UNREACHABLE, MachineEvent.Kind.RECOVERED)


@dataclass(frozen=True)
class Subject:
    """The machine an alert is about, as it was when the alert was written."""

    machine_id: int | None
    hostname: str
    ip_address: str | None
    vni: int | None

    @classmethod
    def of(cls, machine: Machine) -> Subject:
        return cls(machine.pk, machine.hostname, machine.ip_address, machine.vni)

    @classmethod
    def of_event(cls, entry: MachineEvent, vni: int | None) -> Subject:
        return cls(entry.machine_id, entry.hostname, entry.ip_address, vni)


def active_silences(now: datetime | None = None) -> list[Silence]:
    now = now or timezone.now()
    return list(Silence.objects.filter(starts_at__lte=now, ends_at__gt=now))


def silenced(subject: Subject | None, silences: list[Silence], now: datetime | None = None) -> bool:
    machine_id, vni = (subject.machine_id, subject.vni) if subject else (None, None)
    return any(silence.covers(machine_id, vni, now) for silence in silences)


def enqueue(kind: str, subject: Subject | None = None, detail: str = "", now: datetime | None = None,
            channels: list[Channel] | None = None, silences: list[Silence] | None = None) -> list[Notification]:
    """Outbox rows for one event (unsaved); `channels` and `silences` may be passed in by a caller writing
    many alerts at once, to read them once."""
    now = now or timezone.now()
    if subject is not None and silenced(subject, active_silences(now) if silences is None else silences, now):
        return []
    channels = enabled_channels() if channels is None else channels
    vni = subject.vni if subject else None
    return [
        Notification(
            channel=channel, kind=kind, machine_id=subject.machine_id if subject else None,
            hostname=subject.hostname if subject else "", ip_address=subject.ip_address if subject else None,
            vni=vni, detail=detail, occurred_at=now, next_attempt_at=now,
        )
        for channel in channels if channel.wants(kind, vni)
    ]


def enabled_channels() -> list[Channel]:
    return list(Channel.objects.filter(enabled=True))


def write(kind: str, subject: Subject | None = None, detail: str = "", now: datetime | None = None) -> int:
    """Enqueue and save the alerts of one event; returns how many were written."""
    rows = enqueue(kind, subject, detail, now)
    Notification.objects.bulk_create(rows)
    return len(rows)


def state_changes(changes: list[tuple[Subject, str, str]], now: datetime) -> list[Notification]:
    """Alerts for a batch of status changes (subject, kind, detail) recorded by the monitor, with flapping
    applied. Call in the batch's transaction, before or after its log entries are written."""
    if not changes:
        return []
    channels, silences = enabled_channels(), active_silences(now)
    if not channels:
        return []
    ids = [subject.machine_id for subject, _kind, _detail in changes]
    flapping = set(FlapState.objects.filter(machine_id__in=ids).values_list("machine_id", flat=True))
    if flapping:
        FlapState.objects.filter(machine_id__in=flapping).update(last_change_at=now)
    recent = _changes_in_last_hour(ids, now)
    rows = []
    for subject, kind, detail in changes:
        if subject.machine_id in flapping:
            continue
        # This change is not in the log yet when the caller writes alerts first; counting it either way.
        count = recent.get(subject.machine_id, 0)
        if count + 1 > settings.FLAP_LIMIT:
            FlapState.objects.get_or_create(machine_id=subject.machine_id, defaults={"since": now,
                                                                                   "last_change_at": now})
            detail = f"{count + 1} state changes in the last hour; now {kind}"
            kind = AlertKind.FLAPPING
        rows += enqueue(kind, subject, detail, now, channels, silences)
    return rows


def _changes_in_last_hour(ids: list[int], now: datetime) -> dict[int, int]:
    counts: dict[int, int] = {}
    entries = MachineEvent.objects.filter(
        machine_id__in=ids, kind__in=STATE_CHANGES, created_at__gte=now - timedelta(hours=1), created_at__lt=now,
    ).values_list("machine_id", flat=True)
    for machine_id in entries:
        counts[machine_id] = counts.get(machine_id, 0) + 1
    return counts


def log_entry_saved(sender, instance: MachineEvent, created: bool, **kwargs) -> None:
    """post_save of the log: deletions and MAC changes come from machines.services, inside its transaction.
    (The monitor's state changes are written in bulk, without signals, and alert through state_changes.)"""
    if not created or instance.kind not in (MachineEvent.Kind.DELETED, MachineEvent.Kind.MAC_CHANGED):
        return
    vni = Machine.objects.filter(pk=instance.machine_id).values_list("vni", flat=True).first()
    detail = instance.detail
    if instance.kind == MachineEvent.Kind.DELETED and instance.actor:
        detail = f"deleted by {instance.actor}" + (f"; {detail}" if detail else "")
    write(instance.kind, Subject.of_event(instance, vni), detail, instance.created_at)


def silence_filter(machine: Machine) -> Q:
    """Silences covering this machine: for it, for its VNI, or for everything."""
    scope = Q(machine=machine) | Q(machine__isnull=True, vni__isnull=True)
    if machine.vni is not None:
        scope |= Q(machine__isnull=True, vni=machine.vni)
    return scope
