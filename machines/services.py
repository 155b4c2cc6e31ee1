"""Every write to the inventory goes through here, so logging and the signals that scheduling and live pushes
hang on can never be skipped. The monitor's own writes (check results) are in monitoring.checks."""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from . import signals
from .models import Machine, MachineEvent
from .validation import Keep, Registration

# Lines written while a request is handled carry its request id (vxlanmgr.request_id); each names the machine by
# id and address, which is how the monitor's lines name it too.
logger = logging.getLogger("vxlanmgr.inventory")

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


def _lock_creations() -> None:
    # Serialises the last creations before the limit so it holds under a boot storm.
    # SQLite needs nothing: its IMMEDIATE transactions already serialise writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_LOCK_KEY])


def _check_room(machine: Machine) -> None:
    """Raise MachineLimitReached when the inventory is over the limit with `machine`, just inserted.

    Far below the limit, creations run side by side. Ids come from a sequence that never goes back, so when
    ours was handed out there were at most that many machines, committed or in flight: a small id needs no
    count at all. Otherwise a count shows whether even every connection creating at once could not pass the
    limit. Close to it creations take turns, so the limit holds exactly however many hosts register together.
    """
    if machine.pk + _LIMIT_SLACK <= settings.MAX_MACHINES:
        return
    if Machine.objects.count() + _LIMIT_SLACK <= settings.MAX_MACHINES:
        return
    _lock_creations()
    # Counted again under the lock: every creation that took its turn before ours is committed now.
    if Machine.objects.count() > settings.MAX_MACHINES:
        raise MachineLimitReached()


# The SELECT … FOR UPDATE by address, compiled once per database alias: see _locked_machine.
_LOCKED_BY_ADDRESS: dict[str, tuple[str, list]] = {}


def _locked_machine(ip_address: str) -> Machine | None:
    """The machine at this address with its row locked until the transaction ends, or None.

    Compiling this queryset (twenty columns) anew for every registration was the largest cost of its Python
    side. The ORM compiles it once per database here; each call then runs that SQL and builds the machine as
    the ORM would (the backend's and the fields' converters, then ``Model.from_db``). Call in a transaction.
    """
    alias = connection.alias
    prepared = _LOCKED_BY_ADDRESS.get(alias)
    if prepared is None:
        compiler = Machine.objects.select_for_update().filter(ip_address="192.0.2.1")[:1].query.get_compiler(alias)
        sql, params = compiler.as_sql()
        if len(params) != 1:
            raise AssertionError(f"expected the address as the only parameter of {sql!r}")
        prepared = _LOCKED_BY_ADDRESS[alias] = (sql, [column for column, _sql, _alias in compiler.select])
    sql, columns = prepared
    with connection.cursor() as cursor:
        cursor.execute(sql, [Machine._meta.get_field("ip_address").get_db_prep_value(ip_address, connection)])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column in enumerate(columns):
        for convert in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
            values[index] = convert(values[index], column, connection)
    return Machine.from_db(alias, [column.target.attname for column in columns], values)


def register_machine(data: Registration) -> RegisterResult:
    """Create or update the machine keyed by IP address."""
    now = timezone.now()
    for _attempt in range(3):
        try:
            with transaction.atomic():
                machine = _locked_machine(data.ip_address)
                if machine is None:
                    machine = Machine.objects.create(
                        ip_address=data.ip_address,
                        hostname=data.hostname,
                        mac_address=data.mac_address,
                        vni=data.vni,
                        extra_data=data.extra_data,
                        vtep=None if data.vtep is Keep.KEEP else data.vtep,
                        mtu=None if data.mtu is Keep.KEEP else data.mtu,
                        registered_at=now,
                        last_registered_at=now,
                        next_check_at=now,
                    )
                    _check_room(machine)
                    created = True
                else:
                    _apply_update(machine, data, now)
                    created = False
                signals.machines_changed.send(Machine, changed=[machine.pk], created=created)
            if created:
                logger.info("registered %s %s as machine %d", machine.hostname, machine.ip_address, machine.pk,
                            extra=_about(machine))
            return RegisterResult(machine, created)
        except IntegrityError as exc:
            # Another request created this IP between our read and our insert: update that row instead. Any
            # other violation is a bug or bad data, and retrying would only repeat it.
            if not _is_address_taken(exc):
                raise
            continue
    raise IntegrityError(f"could not register {data.ip_address} after concurrent retries")


def _is_address_taken(exc: IntegrityError) -> bool:
    cause = exc.__cause__
    constraint = getattr(getattr(cause, "diag", None), "constraint_name", None)
    if constraint is not None:  # PostgreSQL names the violated constraint
        return getattr(cause, "sqlstate", None) == "23505" and "ip_address" in constraint
    return "UNIQUE constraint failed" in str(exc) and "ip_address" in str(exc)


def _about(machine: Machine) -> dict:
    """The fields of a log line about this machine."""
    return {"machine_id": machine.pk, "machine_ip": machine.ip_address, "hostname": machine.hostname}


def _apply_update(machine: Machine, data: Registration, now: datetime) -> None:
    if machine.mac_address != data.mac_address:
        MachineEvent.snapshot(
            machine,
            MachineEvent.Kind.MAC_CHANGED,
            f"MAC address changed from {machine.mac_address} to {data.mac_address}; check for an address conflict.",
        ).save()
        logger.warning(
            "machine %d %s: MAC address changed from %s to %s; check for an address conflict", machine.pk,
            machine.ip_address, machine.mac_address, data.mac_address, extra=_about(machine),
        )
    vtep = machine.vtep if data.vtep is Keep.KEEP else data.vtep
    mtu = machine.mtu if data.mtu is Keep.KEEP else data.mtu
    changed = (machine.hostname, machine.vni, machine.extra_data, machine.vtep, machine.mtu) != (
        data.hostname, data.vni, data.extra_data, vtep, mtu
    )
    machine.hostname = data.hostname
    machine.mac_address = data.mac_address
    machine.vni = data.vni
    machine.extra_data = data.extra_data
    machine.vtep = vtep
    machine.mtu = mtu
    machine.last_registered_at = now
    signals.machine_reregistered.send(Machine, machine=machine, now=now)
    machine.save()
    # Hosts re-register every few minutes: only a change, or a return from unreachable, is worth a line at INFO.
    level = logging.INFO if changed or machine.status == Machine.Status.UNREACHABLE else logging.DEBUG
    logger.log(level, "re-registered %s %s (machine %d, %s%s)", machine.hostname, machine.ip_address, machine.pk,
               machine.status, ", details changed" if changed else "", extra=_about(machine))


def delete_machine(pk: int, actor: str, force: bool = False) -> MachineEvent:
    """Delete a machine (its check history goes with it), leaving a `deleted` log entry with its last known state."""
    with transaction.atomic():
        machine = Machine.objects.select_for_update().filter(pk=pk).first()
        if machine is None:
            raise AlreadyDeleted(pk)
        if machine.status != Machine.Status.UNREACHABLE and not force:
            raise NotUnreachable(machine)
        since = machine.unreachable_since.isoformat() if machine.unreachable_since else "-"
        seen = machine.last_seen_at.isoformat() if machine.last_seen_at else "never"
        entry = MachineEvent.snapshot(
            machine,
            MachineEvent.Kind.DELETED,
            f"deleted while {machine.status}; VNI {machine.vni if machine.vni is not None else '-'}; "
            f"unreachable since {since}; last seen {seen}",
        )
        entry.actor = actor[:150]
        entry.machine = None
        entry.save()
        machine.delete()
        signals.machines_changed.send(Machine, deleted=[pk])
    logger.info("deleted %s %s (machine %d, %s) by %s", machine.hostname, machine.ip_address, pk, machine.status,
                entry.actor, extra=_about(machine) | {"machine_id": pk})
    return entry
