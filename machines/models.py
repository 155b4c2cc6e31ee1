import hashlib
import json
import secrets

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .status import Status


class Machine(models.Model):
    Status = Status

    hostname = models.CharField(_("host name"), max_length=253)
    ip_address = models.GenericIPAddressField(_("IP address"), unique=True)
    mac_address = models.CharField(_("MAC address"), max_length=17)
    vni = models.PositiveIntegerField(_("VNI"), null=True, blank=True)
    # The host's underlay tunnel endpoint (`local` of its vxlan link) and the overlay link's MTU, as the
    # register script reports them: hosts behind one VTEP fail together when that VTEP goes.
    vtep = models.GenericIPAddressField(_("VTEP address"), null=True, blank=True)
    mtu = models.PositiveIntegerField(_("MTU"), null=True, blank=True)
    extra_data = models.JSONField(_("extra data"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    registered_at = models.DateTimeField(_("registered"), default=timezone.now)
    last_registered_at = models.DateTimeField(_("last registered"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    last_seen_at = models.DateTimeField(_("last seen"), null=True, blank=True)

    # Monitor state, kept in the database so a restarted monitor continues where it stopped.
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    check_interval = models.PositiveIntegerField(_("check interval (s)"), null=True, blank=True)
    next_check_at = models.DateTimeField(_("next check"), default=timezone.now)
    last_checked_at = models.DateTimeField(_("last checked"), null=True, blank=True)
    last_rtt_ms = models.FloatField(_("last round trip (ms)"), null=True, blank=True)
    last_failure_kind = models.CharField(_("last failure"), max_length=16, blank=True)
    unreachable_since = models.DateTimeField(_("unreachable since"), null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    # Answered share of the last 30 days' checks, refreshed by the monitor with every hourly fold so the
    # dashboard can show and sort it without reading history.
    uptime_30d = models.FloatField(_("30-day uptime"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("machine")
        verbose_name_plural = _("machines")
        indexes = [
            models.Index(fields=["status", "hostname"]),
            models.Index(fields=["hostname"]),
            models.Index(fields=["next_check_at"]),
            # Alerts count the hosts behind one VTEP when several of them fail together.
            models.Index(fields=["vtep"]),
        ]

    def __str__(self) -> str:
        return f"{self.hostname} ({self.ip_address})"

    @property
    def extra_data_pretty(self) -> str:
        return json.dumps(self.extra_data, indent=2, ensure_ascii=False, sort_keys=True)

    def to_dict(self) -> dict:
        return {
            "id": self.pk,
            "hostname": self.hostname,
            "ip_address": self.ip_address,
            "mac_address": self.mac_address,
            "vni": self.vni,
            "vtep": self.vtep,
            "mtu": self.mtu,
            "status": self.status,
            "extra_data": self.extra_data,
            "registered_at": _iso(self.registered_at),
            "last_registered_at": _iso(self.last_registered_at),
            "updated_at": _iso(self.updated_at),
            "last_seen_at": _iso(self.last_seen_at),
        }


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


class MachineEvent(models.Model):
    """Append-only: rows outlive their machine and are never edited."""

    class Kind(models.TextChoices):
        UNREACHABLE = "unreachable", _("Became unreachable")
        RECOVERED = "recovered", _("Recovered")
        DELETED = "deleted", _("Deleted")
        MAC_CHANGED = "mac_changed", _("MAC address changed")
        # About a monitor, not a machine: `hostname` names the monitor, and there is no address.
        MONITOR_ISOLATED = "monitor_isolated", _("Monitor cut off")
        MONITOR_REJOINED = "monitor_rejoined", _("Monitor reconnected")

    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="log_entries",
        verbose_name=_("machine"),
    )
    hostname = models.CharField(_("host name"), max_length=253)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    mac_address = models.CharField(_("MAC address"), max_length=17, blank=True)
    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    detail = models.TextField(_("detail"), blank=True)
    actor = models.CharField(_("by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("log entry")
        verbose_name_plural = _("failure log")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        where = f" ({self.ip_address})" if self.ip_address else ""
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.get_kind_display()} {self.hostname}{where}"

    @classmethod
    def snapshot(cls, machine: Machine, kind: str, detail: str = "") -> "MachineEvent":
        return cls(
            machine=machine,
            hostname=machine.hostname,
            ip_address=machine.ip_address,
            mac_address=machine.mac_address,
            kind=kind,
            detail=detail,
        )


def hash_token(raw: str) -> str:
    # Tokens are 256-bit random strings, so a fast unsalted hash is enough and allows an indexed lookup.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        REGISTER = "register", _("Register own address")
        API = "api", _("Full API")

    name = models.CharField(_("name"), max_length=100)
    scope = models.CharField(_("scope"), max_length=16, choices=Scope.choices, default=Scope.REGISTER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(_("prefix"), max_length=12, editable=False)
    from_environment = models.CharField(
        _("seeded from"), max_length=64, blank=True, editable=False,
        help_text=_("Environment variable this token was seeded from; it stops working when that variable changes."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.scope})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def set_raw(self, raw: str) -> None:
        self.token_hash = hash_token(raw)
        self.prefix = raw[:8]

    @staticmethod
    def generate_raw() -> str:
        return "vxm_" + secrets.token_urlsafe(32)
