"""Silences (maintenance windows): the rules and writes that /api/silences and the dashboard's Silences page share.

A silence covers one machine, one VNI or everything, from when it is made until `ends_at`. Ending one sets
`ends_at` to now; the delivery worker's chores then announce, once, every machine in its scope that is still
unreachable (chores.conclude_silences). Open dashboards are told, so their silenced marks follow.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from machines.models import Machine

from .. import broadcast
from ..models import Silence

# Long enough for any maintenance, short enough that a forgotten silence does not hide outages for good.
MAX_LENGTH = timedelta(days=90)
MAX_REASON = 500
# What GET /api/silences?all=1 and the page list of ended silences at most.
MAX_LISTED = 1000


class Ended(Exception):
    """The silence is over: it cannot be changed any more."""


def active(now=None) -> QuerySet[Silence]:
    """Silences not over yet, those ending first first."""
    now = now or timezone.now()
    return Silence.objects.filter(ends_at__gt=now).select_related("machine").order_by("ends_at", "pk")


def recent(now=None) -> QuerySet[Silence]:
    """Every silence, the latest first (ongoing ones before those that ended)."""
    return Silence.objects.select_related("machine").order_by("-ends_at", "-pk")


def end_refusal(ends_at, now=None) -> str:
    """Why `ends_at` cannot end a silence made or changed now, or an empty string."""
    now = now or timezone.now()
    if ends_at <= now:
        return _("Must be in the future.")
    if ends_at - now > MAX_LENGTH:
        return _("At most %(days)d days from now.") % {"days": MAX_LENGTH.days}
    return ""


def reason_refusal(reason: str) -> str:
    if "\x00" in reason:
        return _("Must not contain NUL characters.")
    if not reason.strip():
        return _("Say why (a ticket, the maintenance), so others know what to expect.")
    if len(reason) > MAX_REASON:
        return _("At most %(n)d characters.") % {"n": MAX_REASON}
    return ""


def create(*, ends_at, reason: str, by: str, machine: Machine | None = None, vni: int | None = None) -> Silence:
    if machine is not None and vni is not None:
        raise ValueError("a silence covers a machine or a VNI, not both")
    now = timezone.now()
    with transaction.atomic():
        silence = Silence.objects.create(
            machine=machine, vni=vni, starts_at=now, ends_at=ends_at, reason=reason.strip(), created_by=by[:150],
            created_at=now,
        )
        _tell_dashboards(silence)
    return silence


def change(silence: Silence, *, ends_at=None, reason: str | None = None) -> Silence:
    """A new end (earlier or later) and/or reason for a silence not over yet; Ended when it is."""
    with transaction.atomic():
        current = Silence.objects.select_for_update().get(pk=silence.pk)
        if current.ends_at <= timezone.now():
            raise Ended
        if ends_at is not None:
            current.ends_at = ends_at
        if reason is not None:
            current.reason = reason.strip()
        current.save(update_fields=["ends_at", "reason"])
        _tell_dashboards(current)
    silence.ends_at, silence.reason = current.ends_at, current.reason
    return silence


def end(silence: Silence) -> Silence:
    """End it now (nothing changes when it is over already)."""
    now = timezone.now()
    with transaction.atomic():
        if Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(ends_at=now):
            silence.ends_at = now
            _tell_dashboards(silence)
    return silence


def _tell_dashboards(silence: Silence) -> None:
    if silence.machine_id is not None:
        broadcast.push_after_commit(broadcast.event(changed=[silence.machine_id]))
    else:
        # A VNI or everything: each dashboard reloads its list once rather than being sent every machine.
        broadcast.push_after_commit(broadcast.event(created=True))


def _key(silence: Silence) -> tuple:
    if silence.machine_id is not None:
        return ("machine", silence.machine_id)
    return ("vni", silence.vni) if silence.vni is not None else ("everything", None)


def covering(silences: list[Silence], machines: list[Machine]) -> dict[int, datetime]:
    """machine id -> when the last of the silences covering it ends, for the machines any of them covers."""
    ends: dict[tuple, datetime] = {}
    for silence in silences:
        key = _key(silence)
        ends[key] = max(silence.ends_at, ends.get(key, silence.ends_at))
    covered = {}
    for machine in machines:
        found = [ends[key] for key in (("machine", machine.pk), ("vni", machine.vni), ("everything", None))
                 if key in ends]
        if found:
            covered[machine.pk] = max(found)
    return covered


def find_machine(text: str) -> tuple[Machine | None, str]:
    """The machine an operator means by a host name or an IP address: (machine, "") or (None, why not)."""
    text = text.strip()
    if not text:
        return None, _("Give the machine's host name or IP address.")
    address = _address(text)
    if address:
        machine = Machine.objects.filter(ip_address=address).first()
        if machine is not None:
            return machine, ""
    named = list(Machine.objects.filter(hostname__iexact=text.rstrip("."))[:2])
    if len(named) == 1:
        return named[0], ""
    if named:
        return None, _("Several machines are called %(name)s: give the IP address instead.") % {"name": text}
    return None, _("No machine has this host name or IP address.")


def _address(text: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4, as machines are stored), or ""."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ""
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)
