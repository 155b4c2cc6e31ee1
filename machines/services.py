"""Every write to machines goes through here, so logging and live pushes can never be skipped."""

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import FailureLog, Machine
from .validation import Registration

# Any constant works; it only has to be the same for every process creating machines.
_CREATE_LOCK_KEY = 0x7678_6C61


class MachineLimitReached(Exception):
    pass


@dataclass
class RegisterResult:
    machine: Machine
    created: bool


def _lock_creations() -> None:
    # Serialises the count-then-insert of new machines so the limit holds under a boot storm.
    # SQLite needs nothing: its IMMEDIATE transactions already serialise writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_LOCK_KEY])


def register_machine(data: Registration) -> RegisterResult:
    """Create or update the machine keyed by IP address."""
    now = timezone.now()
    for _attempt in range(3):
        try:
            with transaction.atomic():
                machine = Machine.objects.select_for_update().filter(ip_address=data.ip_address).first()
                if machine is None:
                    _lock_creations()
                    if Machine.objects.filter(ip_address=data.ip_address).exists():
                        raise IntegrityError("created concurrently")
                    if Machine.objects.count() >= settings.MAX_MACHINES:
                        raise MachineLimitReached()
                    machine = Machine.objects.create(
                        ip_address=data.ip_address,
                        hostname=data.hostname,
                        mac_address=data.mac_address,
                        vni=data.vni,
                        extra_data=data.extra_data,
                        registered_at=now,
                        last_registered_at=now,
                    )
                    created = True
                else:
                    _apply_update(machine, data, now)
                    created = False
            return RegisterResult(machine, created)
        except IntegrityError:
            # Another request created this IP between our read and our insert: update that row instead.
            continue
    raise IntegrityError(f"could not register {data.ip_address} after concurrent retries")


def _apply_update(machine: Machine, data: Registration, now) -> None:
    if machine.mac_address != data.mac_address:
        FailureLog.snapshot(
            machine,
            FailureLog.Kind.MAC_CHANGED,
            _("MAC address changed from %(old)s to %(new)s; check for an address conflict.")
            % {"old": machine.mac_address, "new": data.mac_address},
        ).save()
    machine.hostname = data.hostname
    machine.mac_address = data.mac_address
    machine.vni = data.vni
    machine.extra_data = data.extra_data
    machine.last_registered_at = now
    machine.save()
