"""Validation of what hosts send when they register: every field, with one message per problem."""

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum

from django.conf import settings
from django.utils.translation import gettext as _

MAX_VNI = 2**24 - 1
MAX_EXTRA_BYTES = 4096
# Extra data is labels and small facts, never documents: deep or wide trees only cost every page that shows them.
MAX_EXTRA_DEPTH = 16
MAX_EXTRA_ITEMS = 256
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_MAC_FORMS = (
    re.compile(r"^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$", re.I),
    re.compile(r"^([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})-([0-9a-f]{2})$", re.I),
    re.compile(r"^([0-9a-f]{2})([0-9a-f]{2})\.([0-9a-f]{2})([0-9a-f]{2})\.([0-9a-f]{2})([0-9a-f]{2})$", re.I),
)
# The smallest MTU IPv4 allows (RFC 791), and the largest a link can report.
MIN_MTU = 68
MAX_MTU = 65535
_KNOWN_FIELDS = {"hostname", "mac_address", "vni", "extra_data", "vtep", "mtu"}


class InvalidInput(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


class Keep(Enum):
    """A field the registration left out: the stored value stays (null clears it)."""

    KEEP = "keep"


@dataclass
class Registration:
    ip_address: str
    hostname: str
    mac_address: str
    vni: int | None = None
    extra_data: dict = field(default_factory=dict)
    # Facts about the host's underlay, which an older script or a host without iproute2 may not know: a
    # registration without them must not wipe what an earlier one reported.
    vtep: str | Keep | None = Keep.KEEP
    mtu: int | Keep | None = Keep.KEEP


def _unicast_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address in `value`, IPv4-mapped IPv6 as plain IPv4; neither unspecified nor multicast."""
    if not isinstance(value, str) or not value or len(value) > 45:
        raise ValueError(_("Enter a valid IPv4 or IPv6 address."))
    if "%" in value:
        raise ValueError(_("Leave out the zone (the part after %); the address alone identifies the machine."))
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(_("Enter a valid IPv4 or IPv6 address.")) from None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        raise ValueError(_("The address cannot be unspecified or multicast."))
    return address


def normalise_ip(value: object) -> str:
    """The canonical text of an IPv4 or IPv6 address; IPv4-mapped IPv6 becomes plain IPv4."""
    address = _unicast_address(value)
    refusal = address_refusal(address)
    if refusal:
        raise ValueError(refusal)
    return str(address)


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    """Why the address may not be registered or pinged, or "" when it may.

    Every global or private unicast address is allowed, and no loopback, link-local, broadcast, reserved,
    shared (100.64.0.0/10), multicast or unspecified one (a host on the overlay has none of those, and pinging
    them from the manager reaches the manager itself or its own link), unless a prefix listed in
    VXLANMGR_ALLOWED_PREFIXES covers it.
    """
    if isinstance(address, str):
        address = ipaddress.ip_address(address)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in prefix for prefix in settings.ALLOWED_PREFIXES):
        return ""
    special = (
        address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified
        or address.is_reserved or (address.version == 4 and address.packed[0] == 0)  # "this network"
    )
    if special or not (address.is_global or address.is_private):
        return _(
            "Loopback, link-local, broadcast, reserved and shared addresses cannot be registered "
            "unless VXLANMGR_ALLOWED_PREFIXES lists them."
        )
    return ""


def normalise_hostname(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(_("A host name is required and must be a string."))
    name = value.strip().rstrip(".")
    if not name:
        raise ValueError(_("A host name is required and must be a string."))
    if len(name) > 253:
        raise ValueError(_("A host name has at most 253 characters."))
    labels = name.split(".")
    for label in labels:
        if not label:
            raise ValueError(_("A host name cannot contain empty labels (two dots in a row)."))
        if len(label) > 63:
            raise ValueError(_("Each label of a host name has at most 63 characters."))
        if not label.isascii() or not _LABEL.match(label):
            raise ValueError(
                _("A host name has only ASCII letters, digits and hyphens, and no label starts or ends with a hyphen.")
            )
    return name.lower()


def normalise_mac(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(_("A MAC address is required and must be a string."))
    for form in _MAC_FORMS:
        match = form.match(value.strip())
        if match:
            octets = [int(part, 16) for part in match.groups()]
            break
    else:
        raise ValueError(_("Enter a MAC address as aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabb.ccdd.eeff."))
    if not any(octets):
        raise ValueError(_("The all-zero MAC address is not a real interface."))
    if all(octet == 0xFF for octet in octets):
        raise ValueError(_("The broadcast MAC address is not a real interface."))
    if octets[0] & 1:
        raise ValueError(_("A multicast MAC address is not a real interface."))
    return ":".join(f"{octet:02x}" for octet in octets)


def normalise_vni(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(_("The VNI must be a whole number."))
    if not 0 <= value <= MAX_VNI:
        raise ValueError(_("The VNI must be between 0 and %(max)d.") % {"max": MAX_VNI})
    return value


def normalise_vtep(value: object) -> str | None:
    """The host's tunnel endpoint on the underlay, canonical. VXLANMGR_ALLOWED_PREFIXES is about overlay
    addresses the monitor pings, so it does not apply: a lab's VTEP is often a loopback address."""
    if value is None:
        return None
    return str(_unicast_address(value))


def normalise_mtu(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MTU <= value <= MAX_MTU:
        raise ValueError(
            _("The MTU must be a whole number from %(min)d to %(max)d.") % {"min": MIN_MTU, "max": MAX_MTU}
        )
    return value


def normalise_extra_data(value: object) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(_("Extra data must be a JSON object."))
    check_json_values(value)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_EXTRA_BYTES:
        raise ValueError(
            _("Extra data is %(size)d bytes; at most %(max)d are allowed.") % {"size": size, "max": MAX_EXTRA_BYTES}
        )
    return value


def check_json_values(value: object) -> None:
    """Raise ValueError for what the database cannot store or no page should show: NaN and Infinity, the NUL
    character, nesting deeper than MAX_EXTRA_DEPTH or more than MAX_EXTRA_ITEMS keys and items in all."""
    stack, items = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXTRA_DEPTH and isinstance(node, dict | list):
            raise ValueError(_("Extra data is nested more than %(n)d levels deep.") % {"n": MAX_EXTRA_DEPTH})
        if isinstance(node, dict):
            children = list(node.values())
            texts = list(node)
        elif isinstance(node, list):
            children, texts = node, []
        else:
            children, texts = [], [node] if isinstance(node, str) else []
            if isinstance(node, float) and not math.isfinite(node):
                raise ValueError(_("Numbers must be finite: NaN and Infinity are not JSON."))
        items += len(children)
        if items > MAX_EXTRA_ITEMS:
            raise ValueError(_("Extra data has more than %(n)d keys and items in all.") % {"n": MAX_EXTRA_ITEMS})
        if any("\x00" in text for text in texts):
            raise ValueError(_("Text cannot contain the NUL character (\\u0000)."))
        stack.extend((child, depth + 1) for child in children)


def parse_registration(ip: str, payload: object) -> Registration:
    """Check a whole registration; raises InvalidInput naming every bad field at once."""
    if not isinstance(payload, dict):
        raise InvalidInput({"body": [_("The body must be a JSON object.")]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, object] = {}
    checks = [
        ("ip_address", ip, normalise_ip),
        ("hostname", payload.get("hostname"), normalise_hostname),
        ("mac_address", payload.get("mac_address"), normalise_mac),
        ("vni", payload.get("vni"), normalise_vni),
        ("extra_data", payload.get("extra_data"), normalise_extra_data),
    ]
    # Left out, these keep what the machine has (Registration's defaults); null clears them.
    checks += [
        (name, payload[name], check)
        for name, check in (("vtep", normalise_vtep), ("mtu", normalise_mtu))
        if name in payload
    ]
    for name, raw, check in checks:
        try:
            cleaned[name] = check(raw)
        except ValueError as exc:
            errors[name] = [str(exc)]
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown:
        errors["body"] = [_("Unknown field(s): %(names)s.") % {"names": ", ".join(unknown)}]
    if errors:
        raise InvalidInput(errors)
    return Registration(**cleaned)
