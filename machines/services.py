"""Every write to machines goes through here, so logging, scheduling and live pushes can never be skipped."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from monitoring import broadcast
from monitoring.models import PingResult
from monitoring.rules import Decision, Outcome, Policy, State, after_reregistration, decide

from .models import FailureLog, Machine
from .validation import Registration

# Any constant works; it only has to be the same for every process creating machines.
_CREATE_LOCK_KEY = 0x7678_6C61
# More than the creations that can be in flight at once (the connection pools of all web processes).
_LIMIT_SLACK = 500


class MachineLimitReached(Exception):
    pass


class NotUnreachable(Exception):
    """Only machines that stopped answering may be deleted, unless the caller forces it."""

    def __init__(self, machine: Machine):
        super().__init__(machine.status)
        self.machine = machine


class AlreadyDeleted(Exception):
    pass


@dataclass
class RegisterResult:
    machine: Machine
    created: bool


def policy() -> Policy:
    return Policy(
        check_interval=settings.CHECK_INTERVAL,
        retry_interval=settings.RETRY_INTERVAL,
        failure_threshold=settings.FAILURE_THRESHOLD,
        backoff_max=settings.BACKOFF_MAX,
    )


def _state(machine: Machine) -> State:
    return State(
        status=machine.status,
        failures=machine.consecutive_failures,
        interval=machine.check_interval,
        unreachable_since=machine.unreachable_since,
    )


def _lock_creations() -> None:
    # Serialises the count-then-insert of new machines so the limit holds under a boot storm.
    # SQLite needs nothing: its IMMEDIATE transactions already serialise writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_LOCK_KEY])


def _check_room_for_one_more(ip_address: str) -> None:
    """Raise MachineLimitReached when the inventory is full.

    Far below the limit, creations run side by side: even every connection creating at once could not pass
    it. Close to it they take turns, so the limit holds exactly however many hosts register together.
    """
    if Machine.objects.count() + _LIMIT_SLACK < settings.MAX_MACHINES:
        return
    _lock_creations()
    if Machine.objects.filter(ip_address=ip_address).exists():
        raise IntegrityError("created concurrently")
    if Machine.objects.count() >= settings.MAX_MACHINES:
        raise MachineLimitReached()


def register_machine(data: Registration) -> RegisterResult:
    """Create or update the machine keyed by IP address."""
    now = timezone.now()
    for _attempt in range(3):
        try:
            with transaction.atomic():
                machine = Machine.objects.select_for_update().filter(ip_address=data.ip_address).first()
                if machine is None:
                    _check_room_for_one_more(data.ip_address)
                    machine = Machine.objects.create(
                        ip_address=data.ip_address,
                        hostname=data.hostname,
                        mac_address=data.mac_address,
                        vni=data.vni,
                        extra_data=data.extra_data,
                        registered_at=now,
                        last_registered_at=now,
                        next_check_at=now,
                    )
                    created = True
                else:
                    _apply_update(machine, data, now)
                    created = False
                broadcast.push_after_commit(broadcast.event(changed=[machine.pk], created=created))
            return RegisterResult(machine, created)
        except IntegrityError:
            # Another request created this IP between our read and our insert: update that row instead.
            continue
    raise IntegrityError(f"could not register {data.ip_address} after concurrent retries")


def _apply_update(machine: Machine, data: Registration, now: datetime) -> None:
    if machine.mac_address != data.mac_address:
        FailureLog.snapshot(
            machine,
            FailureLog.Kind.MAC_CHANGED,
            f"MAC address changed from {machine.mac_address} to {data.mac_address}; check for an address conflict.",
        ).save()
    machine.hostname = data.hostname
    machine.mac_address = data.mac_address
    machine.vni = data.vni
    machine.extra_data = data.extra_data
    machine.last_registered_at = now
    state, delay = after_reregistration(_state(machine), policy())
    if delay is not None:
        machine.check_interval = state.interval
        machine.next_check_at = now + timedelta(seconds=delay)
        # A check already in flight started before the reboot; its result must not overwrite this schedule.
        machine.claim_token = ""
        machine.claimed_until = None
    machine.save()


def claim_due(token: str, limit: int, lease: timedelta, now: datetime | None = None) -> list[Machine]:
    """Claim up to `limit` machines whose check is due, so no other monitor checks them meanwhile."""
    now = now or timezone.now()
    with transaction.atomic():
        # Read under the lock: these rows are exactly the ones the update below claims.
        machines = list(
            Machine.objects.select_for_update(skip_locked=True)
            .filter(next_check_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("next_check_at")
            .only("pk", "ip_address", "hostname", "status", "next_check_at")[:limit]
        )
        if machines:
            Machine.objects.filter(pk__in=[m.pk for m in machines]).update(claimed_until=now + lease, claim_token=token)
    return machines


@dataclass
class CheckRecord:
    machine_id: int
    outcome: Outcome
    loss: float = 0.0


_CHECK_FIELDS = [
    "status", "consecutive_failures", "check_interval", "unreachable_since", "next_check_at", "last_checked_at",
    "last_rtt_ms", "last_failure_kind", "last_seen_at", "claimed_until", "claim_token", "updated_at",
]


@dataclass
class StatusChange:
    machine: Machine
    previous: str
    decision: Decision


def record_checks(token: str, records: Iterable[CheckRecord], now: datetime | None = None) -> list[StatusChange]:
    """Apply a batch of check results in one transaction; returns the machines whose status changed.

    Machines deleted, re-registered or claimed by someone else since the claim are skipped.
    """
    now = now or timezone.now()
    by_id = {record.machine_id: record for record in records}
    rules = policy()
    changed: list[StatusChange] = []
    with transaction.atomic():
        machines = list(Machine.objects.select_for_update().filter(pk__in=list(by_id), claim_token=token))
        pings, logs = [], []
        for machine in machines:
            record = by_id[machine.pk]
            decision = decide(_state(machine), record.outcome, rules, now)
            if decision.state.status != machine.status:
                changed.append(StatusChange(machine, machine.status, decision))
                machine.updated_at = now
            if decision.event:
                detail = _event_detail(machine, decision, record.outcome)
                logs.append(FailureLog.snapshot(machine, decision.event, detail))
            _apply_decision(machine, decision, record.outcome, now)
            pings.append(
                PingResult(
                    machine_id=machine.pk,
                    checked_at=now,
                    ok=record.outcome.ok,
                    rtt_ms=record.outcome.rtt_ms,
                    loss=record.loss,
                    failure=record.outcome.failure,
                )
            )
        _write_check_fields(machines)
        PingResult.objects.bulk_create(pings, batch_size=1000)
        FailureLog.objects.bulk_create(logs)
    return changed


def _write_check_fields(machines: list[Machine]) -> None:
    """Save the _CHECK_FIELDS of machines the caller has locked: one UPDATE … FROM unnest(arrays) on PostgreSQL.

    Django's bulk_update builds a CASE WHEN per field and row, which took ~85% of the monitor's CPU.
    """
    if not machines:
        return
    quote = connection.ops.quote_name
    meta = Machine._meta
    fields = [meta.get_field(name) for name in _CHECK_FIELDS]
    # Values as save() would send them (datetimes become strings on SQLite), then the pk.
    rows = [[field.get_db_prep_save(getattr(m, field.attname), connection) for field in fields] + [m.pk]
            for m in machines]
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    # Identifiers only come from the model's _meta; every value is a parameter.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One array per column (psycopg sends a list as an array, None as NULL), cast without its length
            # (varchar(16)[] -> varchar[]) like Django's own unnest bulk_create.
            columns = [*fields, meta.pk]
            arrays = ", ".join(f"%s::{field.db_type(connection).split('(')[0]}[]" for field in columns)
            names = ", ".join(quote(field.column) for field in columns)
            assignments = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in fields)
            sql = f"UPDATE {table} AS m SET {assignments} FROM unnest({arrays}) AS v({names}) WHERE m.{pk} = v.{pk}"  # noqa: S608
            cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        else:
            assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {pk} = %s", rows)  # noqa: S608


def _apply_decision(machine: Machine, decision: Decision, outcome: Outcome, now: datetime) -> None:
    state = decision.state
    machine.status = state.status
    machine.consecutive_failures = state.failures
    machine.check_interval = state.interval
    machine.unreachable_since = state.unreachable_since
    machine.next_check_at = now + timedelta(seconds=decision.next_delay)
    machine.last_checked_at = now
    machine.last_failure_kind = outcome.failure
    if outcome.ok:
        machine.last_seen_at = now
        machine.last_rtt_ms = outcome.rtt_ms
    machine.claimed_until = None
    machine.claim_token = ""


def _event_detail(machine: Machine, decision: Decision, outcome: Outcome) -> str:
    if decision.event == "unreachable":
        rtt = f"{machine.last_rtt_ms:.2f} ms" if machine.last_rtt_ms is not None else "never answered"
        return (
            f"{decision.state.failures} consecutive failed checks; failure: {outcome.failure or 'unknown'}; "
            f"last round trip seen: {rtt}"
        )
    seconds = int(decision.outage.total_seconds()) if decision.outage else 0
    rtt = f"{outcome.rtt_ms:.2f} ms" if outcome.rtt_ms is not None else "unknown"
    return f"answered again after an outage of {timedelta(seconds=seconds)}; round trip {rtt}"


def delete_machine(pk: int, actor: str, force: bool = False) -> FailureLog:
    """Delete a machine with its ping results, leaving a `deleted` log entry with its last known state."""
    with transaction.atomic():
        machine = Machine.objects.select_for_update().filter(pk=pk).first()
        if machine is None:
            raise AlreadyDeleted(pk)
        if machine.status != Machine.Status.UNREACHABLE and not force:
            raise NotUnreachable(machine)
        since = machine.unreachable_since.isoformat() if machine.unreachable_since else "-"
        seen = machine.last_seen_at.isoformat() if machine.last_seen_at else "never"
        entry = FailureLog.snapshot(
            machine,
            FailureLog.Kind.DELETED,
            f"deleted while {machine.status}; VNI {machine.vni if machine.vni is not None else '-'}; "
            f"unreachable since {since}; last seen {seen}",
        )
        entry.actor = actor[:150]
        entry.machine = None
        entry.save()
        PingResult.objects.filter(machine_id=pk).delete()
        machine.delete()
        broadcast.push_after_commit(broadcast.event(deleted=[pk]))
    return entry
