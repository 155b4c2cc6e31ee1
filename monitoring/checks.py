"""The monitor's write path: claiming due machines, recording check results, applying the liveness rules,
writing log entries. Everything a batch changes is written in one transaction."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from machines.models import Machine, MachineEvent

from .alerts import outbox
from .models import Notification, PingResult
from .rules import Decision, Outcome, Policy, State, decide
from .scope import Scope


def policy() -> Policy:
    return Policy(
        check_interval=settings.CHECK_INTERVAL,
        retry_interval=settings.RETRY_INTERVAL,
        failure_threshold=settings.FAILURE_THRESHOLD,
        backoff_max=settings.BACKOFF_MAX,
    )


def state_of(machine: Machine) -> State:
    return State(
        status=machine.status,
        failures=machine.consecutive_failures,
        interval=machine.check_interval,
        unreachable_since=machine.unreachable_since,
    )


def claim_due(token: str, limit: int, lease: timedelta, now: datetime | None = None,
              scope: Scope | None = None) -> list[Machine]:
    """Claim up to `limit` machines whose check is due (within `scope`, when given), so no other monitor checks
    them meanwhile."""
    now = now or timezone.now()
    fields = ("pk", "ip_address", "hostname", "status", "next_check_at", "vni", "last_checked_at", "last_seen_at")
    with transaction.atomic():
        due = (
            Machine.objects.select_for_update(skip_locked=True)
            .filter(scope.q() if scope else Q())
            .filter(next_check_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("next_check_at")
        )
        if connection.vendor == "postgresql":
            return _claim_returning(due.values("pk")[:limit], token, now + lease, fields)
        # Read under the lock: these rows are exactly the ones the update below claims.
        machines = list(due.only(*fields)[:limit])
        if machines:
            Machine.objects.filter(pk__in=[m.pk for m in machines]).update(claimed_until=now + lease, claim_token=token)
    return machines


def _claim_returning(due, token: str, until: datetime, fields: tuple[str, ...]) -> list[Machine]:
    """PostgreSQL: lock, claim and read the due rows in one statement, UPDATE … WHERE pk IN (the locked
    SELECT) RETURNING, in the order they fell due. Call inside a transaction (the SELECT's FOR UPDATE)."""
    quote = connection.ops.quote_name
    meta = Machine._meta
    # The subquery's SQL is Django's own (scope filter and all); identifiers only come from the model's _meta.
    select, params = due.query.sql_with_params()
    columns = ", ".join(quote(meta.get_field(name).column) if name != "pk" else quote(meta.pk.column)
                        for name in fields)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {quote(meta.get_field('claimed_until').column)} = %s, "  # noqa: S608
        f"{quote(meta.get_field('claim_token').column)} = %s WHERE {quote(meta.pk.column)} IN ({select}) "
        f"RETURNING {columns}"
    )
    machines = list(Machine.objects.raw(sql, [until, token, *params]))
    machines.sort(key=lambda machine: (machine.next_check_at, machine.pk))
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


# What the rules, the log entry and the alert of a check read; the rest of the row (extra_data above all) is
# never loaded. last_seen_at and updated_at are written back as they are when the check leaves them alone.
_RECORD_FIELDS = [
    "pk", "hostname", "ip_address", "mac_address", "vni", "status", "consecutive_failures", "check_interval",
    "unreachable_since", "last_rtt_ms", "last_seen_at", "updated_at",
]


def record_checks(token: str, records: Iterable[CheckRecord], now: datetime | None = None) -> list[StatusChange]:
    """Apply a batch of check results in one transaction; returns the machines whose status changed.

    Machines deleted, re-registered or claimed by someone else since the claim are skipped.
    """
    now = now or timezone.now()
    by_id = {record.machine_id: record for record in records}
    rules = policy()
    changed: list[StatusChange] = []
    with transaction.atomic():
        machines = list(
            Machine.objects.select_for_update().filter(pk__in=list(by_id), claim_token=token).only(*_RECORD_FIELDS)
        )
        logs, alerts = [], []
        for machine in machines:
            record = by_id[machine.pk]
            decision = decide(state_of(machine), record.outcome, rules, now)
            if decision.state.status != machine.status:
                changed.append(StatusChange(machine, machine.status, decision))
                machine.updated_at = now
            if decision.event:
                detail = _event_detail(machine, decision, record.outcome)
                logs.append(MachineEvent.snapshot(machine, decision.event, detail))
                alerts.append((outbox.Subject.of(machine), decision.event, detail))
            _apply_decision(machine, decision, record.outcome, now)
        _write_check_fields(machines)
        _write_results([by_id[machine.pk] for machine in machines], now)
        # The alerts commit with the status changes and log entries that cause them, or not at all.
        Notification.objects.bulk_create(outbox.state_changes(alerts, now))
        MachineEvent.objects.bulk_create(logs)
    return changed


def _write_check_fields(machines: list[Machine]) -> None:
    """Save the _CHECK_FIELDS of machines the caller has locked: on PostgreSQL one UPDATE … FROM
    jsonb_to_recordset(one JSON document of the rows).

    Django's bulk_update builds a CASE WHEN per field and row (once ~85% of the monitor's CPU), and psycopg
    dumps a list parameter element by element in Python: one JSON text, made by the json module in C, leaves
    the per-value work to PostgreSQL.
    """
    if not machines:
        return
    quote = connection.ops.quote_name
    meta = Machine._meta
    fields = [meta.get_field(name) for name in _CHECK_FIELDS]
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    # Identifiers only come from the model's _meta; every value is a parameter.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rows = [[getattr(m, field.attname) for field in fields] + [m.pk] for m in machines]
            columns = [*fields, meta.pk]
            assignments = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in fields)
            sql = (f"UPDATE {table} AS m SET {assignments} FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608
                   f"AS v({_record_type(columns)}) WHERE m.{pk} = v.{pk}")
            cursor.execute(sql, [_json_rows(rows, [field.column for field in columns])])
        else:
            # Values as save() would send them (datetimes become strings on SQLite), then the pk.
            rows = [[field.get_db_prep_save(getattr(m, field.attname), connection) for field in fields] + [m.pk]
                    for m in machines]
            assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {pk} = %s", rows)  # noqa: S608


def _write_results(records: list[CheckRecord], now: datetime) -> None:
    """One PingResult per record, checked at `now`: on PostgreSQL one INSERT … SELECT from a JSON document
    (as _write_check_fields), elsewhere bulk_create."""
    if not records:
        return
    if connection.vendor != "postgresql":
        PingResult.objects.bulk_create(
            [PingResult(machine_id=r.machine_id, checked_at=now, ok=r.outcome.ok, rtt_ms=r.outcome.rtt_ms,
                        loss=r.loss, failure=r.outcome.failure) for r in records],
            batch_size=1000,
        )
        return
    quote = connection.ops.quote_name
    meta = PingResult._meta
    fields = [meta.get_field(name) for name in ("machine", "ok", "rtt_ms", "loss", "failure")]
    names = ", ".join(quote(field.column) for field in fields)
    rows = [[r.machine_id, r.outcome.ok, r.outcome.rtt_ms, r.loss, r.outcome.failure] for r in records]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({names}, {quote(meta.get_field('checked_at').column)}) "  # noqa: S608
            f"SELECT {names}, %s FROM jsonb_to_recordset(%s::jsonb) AS v({_record_type(fields)})",
            [now, _json_rows(rows, [field.column for field in fields])],
        )


def _record_type(fields) -> str:
    """The column list of jsonb_to_recordset for these fields: their columns with their database types."""
    quote = connection.ops.quote_name
    # A primary key's own type may be its sequence ("bigserial" in older backends); its plain type is rel_db_type.
    types = [field.rel_db_type(connection) if field.primary_key else field.db_type(connection) for field in fields]
    return ", ".join(f"{quote(field.column)} {db_type}" for field, db_type in zip(fields, types, strict=True))


def _json_rows(rows: list[list], keys: list[str]) -> str:
    """Rows as a JSON array of objects; datetimes as ISO 8601 with their offset, each distinct one formatted once
    (a batch shares a few: now, now + the interval)."""
    formatted: dict[datetime, str] = {}

    def iso(value: datetime) -> str:
        text = formatted.get(value)
        if text is None:
            text = formatted[value] = value.isoformat()
        return text

    return json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=iso, check_circular=False)


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
    if decision.event == MachineEvent.Kind.UNREACHABLE:
        rtt = f"{machine.last_rtt_ms:.2f} ms" if machine.last_rtt_ms is not None else "never answered"
        return (
            f"{decision.state.failures} consecutive failed checks; failure: {outcome.failure or 'unknown'}; "
            f"last round trip seen: {rtt}"
        )
    seconds = int(decision.outage.total_seconds()) if decision.outage else 0
    rtt = f"{outcome.rtt_ms:.2f} ms" if outcome.rtt_ms is not None else "unknown"
    return f"answered again after an outage of {timedelta(seconds=seconds)}; round trip {rtt}"


def postpone(token: str, machine_ids: list[int], now: datetime | None = None) -> None:
    """Give back claimed machines unchecked, due again one check interval later; status and counts stay."""
    now = now or timezone.now()
    Machine.objects.filter(pk__in=machine_ids, claim_token=token).update(
        next_check_at=now + timedelta(seconds=settings.CHECK_INTERVAL), claimed_until=None, claim_token=""
    )
