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

    name = models.CharField(max_length=200, unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_beat_at = models.DateTimeField(default=timezone.now)
    mode = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    counters = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.name
