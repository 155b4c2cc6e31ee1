"""Writing what the monitor decides about its own path (monitoring/isolation.py): the log entries, the alert,
the heartbeat's record of cut-off segments, and machines held unjudged meanwhile."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from machines.models import Machine, MachineEvent

from .alerts import outbox
from .models import MonitorHeartbeat, Notification


def hold(token: str, machine_ids: list[int], now: datetime) -> None:
    """Give back claimed machines whose failures are the monitor's own: status and failure count stay, and they
    are probed again at the retry interval."""
    Machine.objects.filter(pk__in=machine_ids, claim_token=token).update(
        next_check_at=now + timedelta(seconds=settings.RETRY_INTERVAL), claimed_until=None, claim_token=""
    )


def vni_of(segment: str) -> int | None:
    value = segment.partition("=")[2]
    return int(value) if value.isdigit() else None


def record(kind: str, monitor: str, segment: str, detail: str, isolation: dict, now: datetime) -> None:
    """One `monitor_isolated` or `monitor_rejoined` log entry, its alert and the heartbeat's isolation state,
    in one transaction."""
    vni = vni_of(segment)
    where = f"VNI {vni}" if vni is not None else "machines without a VNI"
    text = f"{where}: {detail}"
    with transaction.atomic():
        MachineEvent.objects.create(machine=None, hostname=monitor, ip_address=None, kind=kind, detail=text,
                                    created_at=now)
        subject = outbox.Subject(None, monitor, None, vni)
        Notification.objects.bulk_create(outbox.enqueue(kind, subject, text, now))
        MonitorHeartbeat.objects.filter(name=monitor).update(isolation=isolation)


def duration(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))
