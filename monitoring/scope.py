"""What one monitor checks: `--scope vni=100,200`, `--scope prefix=10.100.0.0/24`, or everything.

Several terms joined by ``;`` are a union (``vni=100;prefix=10.9.0.0/16``). A scope filters the claim query,
so monitors with overlapping scopes share machines through the same row claims as unscoped ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from django.db.models import Field, Lookup, Q
from django.utils.translation import gettext as _


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    vnis: frozenset[int] = field(default_factory=frozenset)
    prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Scope:
        vnis: set[int] = set()
        prefixes: list = []
        for term in (text or "").replace(" ", "").split(";"):
            if not term:
                continue
            kind, sep, values = term.partition("=")
            items = [value for value in values.split(",") if value]
            if not sep or not items:
                raise ScopeError(f"scope term {term!r}: expected vni=N[,N…] or prefix=CIDR[,CIDR…]")
            if kind == "vni":
                for value in items:
                    if not value.isdigit() or not 0 <= int(value) < 2**24:
                        raise ScopeError(f"scope vni={value!r}: a VNI is a whole number from 0 to 16777215")
                    vnis.add(int(value))
            elif kind == "prefix":
                for value in items:
                    try:
                        prefixes.append(ipaddress.ip_network(value, strict=False))
                    except ValueError as exc:
                        raise ScopeError(f"scope prefix={value!r}: {exc}") from None
            else:
                raise ScopeError(f"scope term {term!r}: unknown kind {kind!r} (use vni= or prefix=)")
        return cls(frozenset(vnis), tuple(prefixes))

    @property
    def everything(self) -> bool:
        return not self.vnis and not self.prefixes

    def __str__(self) -> str:
        terms = []
        if self.vnis:
            terms.append("vni=" + ",".join(str(vni) for vni in sorted(self.vnis)))
        if self.prefixes:
            terms.append("prefix=" + ",".join(str(prefix) for prefix in self.prefixes))
        return ";".join(terms)

    def describe(self) -> str:
        """For people: "VNI 100, 200", "10.100.0.0/24", "all machines"."""
        parts = []
        if self.vnis:
            parts.append(_("VNI %(vnis)s") % {"vnis": ", ".join(str(vni) for vni in sorted(self.vnis))})
        parts.extend(str(prefix) for prefix in self.prefixes)
        return "; ".join(parts) if parts else _("all machines")

    def q(self) -> Q:
        """The machines in scope, as a filter for Machine querysets."""
        if self.everything:
            return Q()
        condition = Q(vni__in=sorted(self.vnis)) if self.vnis else Q(pk__in=[])
        for prefix in self.prefixes:
            condition |= Q(ip_address__in_network=str(prefix))
        return condition

    def covers(self, vni: int | None, ip_address: str) -> bool:
        if self.everything or (vni is not None and vni in self.vnis):
            return True
        if not self.prefixes:
            return False
        address = ipaddress.ip_address(ip_address)
        return any(address.version == prefix.version and address in prefix for prefix in self.prefixes)


@Field.register_lookup
class InNetwork(Lookup):
    """`ip_address__in_network="10.0.0.0/8"`: PostgreSQL's inet containment; SQLite calls a Python function
    registered on each connection (see MonitoringConfig.ready)."""

    lookup_name = "in_network"

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        if connection.vendor == "postgresql":
            return f"{lhs} <<= {rhs}::inet", [*lhs_params, *rhs_params]
        return f"vxlanmgr_in_network({lhs}, {rhs})", [*lhs_params, *rhs_params]


def in_network(address: str | None, network: str | None) -> bool:
    if not address or not network:
        return False
    try:
        ip, net = ipaddress.ip_address(address), ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False
    return ip.version == net.version and ip in net


def register_sqlite_function(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("vxlanmgr_in_network", 2, in_network, deterministic=True)
