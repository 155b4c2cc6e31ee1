from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from machines.models import Machine


class PingResult(models.Model):
    class Failure(models.TextChoices):
        TIMEOUT = "timeout", _("Timed out")
        UNREACHABLE = "unreachable", _("ICMP unreachable")
        ERROR = "error", _("Local error")

    # The (machine, -checked_at) index serves lookups by machine; a second index on machine_id alone
    # would only cost space on the biggest table.
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="ping_results", db_index=False)
    checked_at = models.DateTimeField(_("checked"), default=timezone.now)
    ok = models.BooleanField(_("answered"))
    rtt_ms = models.FloatField(_("round trip (ms)"), null=True, blank=True)
    loss = models.FloatField(_("loss"), default=0.0)
    failure = models.CharField(_("failure"), max_length=16, choices=Failure.choices, blank=True)

    class Meta:
        verbose_name = _("ping result")
        verbose_name_plural = _("ping results")
        indexes = [models.Index(fields=["machine", "-checked_at"]), models.Index(fields=["checked_at"])]

    def __str__(self) -> str:
        return f"{self.machine_id} {self.checked_at:%Y-%m-%d %H:%M:%S} {'ok' if self.ok else self.failure}"


class Bucket(models.Model):
    """Checks of one machine over one period, folded from the finer tier below it (monitoring/history.py).

    The key is (machine, start): a fold that runs twice cannot write a period twice. Round trips are in
    milliseconds; the mean is rtt_sum / answered.
    """

    pk = models.CompositePrimaryKey("machine_id", "start")
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="+", db_index=False)
    start = models.DateTimeField()
    checks = models.PositiveIntegerField()
    answered = models.PositiveIntegerField()
    loss_sum = models.FloatField()
    rtt_min = models.FloatField(null=True)
    rtt_sum = models.FloatField(null=True)
    rtt_max = models.FloatField(null=True)
    unreachable_seconds = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    @property
    def rtt_mean(self) -> float | None:
        return self.rtt_sum / self.answered if self.answered and self.rtt_sum is not None else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.checks if self.checks else None


class HourlyBucket(Bucket):
    class Meta:
        indexes = [models.Index(fields=["start"])]

    def __str__(self) -> str:
        return f"{self.machine_id} {self.start:%Y-%m-%d %H:00} {self.answered}/{self.checks}"


class DailyBucket(Bucket):
    class Meta:
        indexes = [models.Index(fields=["start"])]

    def __str__(self) -> str:
        return f"{self.machine_id} {self.start:%Y-%m-%d} {self.answered}/{self.checks}"


class FoldMark(models.Model):
    """How far each tier has been folded: every period before `until` is in the tier (never partly)."""

    tier = models.CharField(max_length=8, unique=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.tier} until {self.until:%Y-%m-%d %H:%M}"


class MonitorHeartbeat(models.Model):
    """One row per monitor process, so the dashboard can say when nobody is checking.

    `counters` carries the monitor's own Prometheus counters to the web process's /metrics.
    """

    name = models.CharField(_("name"), max_length=200, unique=True)
    host = models.CharField(_("host"), max_length=253, blank=True)
    # What it checks, as given to `monitor --scope` ("vni=100,200", "prefix=10.100.0.0/24"); empty: everything.
    scope = models.CharField(_("scope"), max_length=500, blank=True)
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    last_beat_at = models.DateTimeField(_("last heartbeat"), default=timezone.now)
    last_round_at = models.DateTimeField(_("last round"), null=True, blank=True)
    mode = models.CharField(_("ICMP mode"), max_length=32, blank=True)
    error = models.TextField(blank=True)
    counters = models.JSONField(default=dict, blank=True)
    # Segments this monitor cannot reach right now: {segment: {"since": iso time, "reason": text}}.
    isolation = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name


# -- alerts ---------------------------------------------------------------------------------------------------


class AlertKind(models.TextChoices):
    UNREACHABLE = "unreachable", _("Became unreachable")
    RECOVERED = "recovered", _("Recovered")
    DELETED = "deleted", _("Deleted")
    MAC_CHANGED = "mac_changed", _("MAC address changed")
    MONITOR_DOWN = "monitor_down", _("No monitor running")
    MONITOR_BACK = "monitor_back", _("Monitor running again")
    FLAPPING = "flapping", _("Flapping")
    STABLE = "stable", _("Stable again")
    STILL_UNREACHABLE = "still_unreachable", _("Still unreachable after a silence")
    MONITOR_ISOLATED = "monitor_isolated", _("Monitor cut off")
    MONITOR_REJOINED = "monitor_rejoined", _("Monitor reconnected")


# Alerts that stand in for a state change: a channel that takes unreachable or recovered alerts gets them too,
# or a machine that flaps, or is still down after a silence, would never reach it.
FOLLOWS = {
    AlertKind.FLAPPING: (AlertKind.FLAPPING, AlertKind.UNREACHABLE, AlertKind.RECOVERED),
    AlertKind.STABLE: (AlertKind.STABLE, AlertKind.UNREACHABLE, AlertKind.RECOVERED),
    AlertKind.STILL_UNREACHABLE: (AlertKind.STILL_UNREACHABLE, AlertKind.UNREACHABLE),
}


class Channel(models.Model):
    """Where alerts go: one Apprise URL (e-mail, Slack, a webhook, …). The URL holds credentials: it is shown
    masked once saved and never logged."""

    class Language(models.TextChoices):
        ENGLISH = "en", "English"
        JAPANESE = "ja", "日本語"

    name = models.CharField(_("name"), max_length=100)
    url = models.TextField(_("Apprise URL"))
    enabled = models.BooleanField(_("enabled"), default=True)
    events = models.JSONField(
        _("events"), default=list, blank=True, help_text=_("Event kinds sent to this channel; empty sends all."),
    )
    vnis = models.JSONField(
        _("VNIs"), default=list, blank=True, help_text=_("Only machines on these VNIs; empty sends all."),
    )
    language = models.CharField(_("language"), max_length=2, choices=Language.choices, default=Language.ENGLISH)
    from_environment = models.CharField(
        _("seeded from"), max_length=64, blank=True, editable=False,
        help_text=_("Set from VXLANMGR_NOTIFY_URLS at start-up; changing the variable updates or removes it."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("alert channel")
        verbose_name_plural = _("alert channels")

    def __str__(self) -> str:
        return self.name

    def wants(self, kind: str, vni: int | None) -> bool:
        if not self.enabled or (self.events and not set(FOLLOWS.get(kind, (kind,))) & set(self.events)):
            return False
        return not self.vnis or vni is None or vni in self.vnis


class Notification(models.Model):
    """The outbox: one alert for one channel, written in the transaction of the change that causes it and
    delivered afterwards by a worker that claims rows the way monitors claim machines."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Could not be delivered")

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications",
                                verbose_name=_("channel"))
    kind = models.CharField(_("event"), max_length=20, choices=AlertKind.choices)
    machine = models.ForeignKey(Machine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                verbose_name=_("machine"))
    # A snapshot, so the message still names a machine deleted meanwhile.
    hostname = models.CharField(_("host name"), max_length=253, blank=True)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    vni = models.PositiveIntegerField(_("VNI"), null=True, blank=True)
    detail = models.TextField(_("detail"), blank=True)
    occurred_at = models.DateTimeField(_("happened"), default=timezone.now)
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.PENDING)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.hostname or ''} → {self.channel_id} ({self.state})"


class Silence(models.Model):
    """A maintenance window: no alerts for one machine, one VNI, or everything (neither set) until `ends_at`.
    States and the log still change meanwhile."""

    machine = models.ForeignKey(Machine, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                verbose_name=_("machine"))
    vni = models.PositiveIntegerField(_("VNI"), null=True, blank=True)
    starts_at = models.DateTimeField(_("starts"), default=timezone.now)
    ends_at = models.DateTimeField(_("ends"))
    reason = models.CharField(_("reason"), max_length=500)
    created_by = models.CharField(_("by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    # Set once the end has been handled: what is still unreachable was announced.
    concluded_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("silence")
        verbose_name_plural = _("silences")
        indexes = [models.Index(fields=["ends_at"])]

    def __str__(self) -> str:
        return f"{self.reason} (until {self.ends_at:%Y-%m-%d %H:%M})"

    def covers(self, machine_id: int | None, vni: int | None, at=None) -> bool:
        at = at or timezone.now()
        if not self.starts_at <= at < self.ends_at:
            return False
        if self.machine_id is not None:
            return self.machine_id == machine_id
        if self.vni is not None:
            return self.vni == vni
        return True


class FlapState(models.Model):
    """A machine announced as flapping: its alerts stay quiet until it has been stable for a while."""

    machine = models.OneToOneField(Machine, on_delete=models.CASCADE, related_name="+", primary_key=True)
    since = models.DateTimeField(default=timezone.now)
    last_change_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.machine_id} flapping since {self.since:%Y-%m-%d %H:%M}"


class Watch(models.Model):
    """A state the web processes share, changed under a row lock so only one of them alerts on it
    (e.g. "monitor_down")."""

    name = models.CharField(max_length=32, unique=True)
    active_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {'since ' + str(self.active_since) if self.active_since else 'clear'}"
