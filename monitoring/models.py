from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from machines.models import Machine


class PingResult(models.Model):
    class Failure(models.TextChoices):
        TIMEOUT = "timeout", _("Timed out")
        UNREACHABLE = "unreachable", _("ICMP unreachable")
        ERROR = "error", _("Local error")

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="ping_results")
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


class MonitorHeartbeat(models.Model):
    """One row per monitor process, so the dashboard can say when nobody is checking."""

    name = models.CharField(max_length=200, unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_beat_at = models.DateTimeField(default=timezone.now)
    mode = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name
