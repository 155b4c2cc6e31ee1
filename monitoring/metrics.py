"""Prometheus metrics: `GET /metrics`, read from the database at scrape time.

The inventory families come from one query over the machines. The monitor is another process, so its own
counters (checks by result, round trips, due lag, last round) are kept in its memory by :class:`CheckCounters`
and written into its heartbeat row (`MonitorHeartbeat.counters`) every 10 s; the collector reads the
heartbeats of the monitors alive. The web process counts nothing itself, so every web process answers alike.
"""

import contextlib
import gc
import ipaddress
import itertools
import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from operator import itemgetter

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from machines.http import json_error
from machines.models import ApiToken, Machine
from machines.tokens import authenticate

from .models import MonitorHeartbeat, PingResult
from .rules import Outcome
from .status import STALE_AFTER

# Round trips on an overlay are well under a millisecond on one host and tens of ms across sites; a ping
# times out after VXLANMGR_PING_TIMEOUT (1 s by default, at most a few).
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RESULTS = ("ok", *PingResult.Failure.values)


class CheckCounters:
    """What one monitor has checked since it started: kept in its memory, written with every heartbeat."""

    def __init__(self) -> None:
        self.since = time.time()
        self.checks = dict.fromkeys(RESULTS, 0)
        self.rtt_counts = [0] * (len(RTT_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.rtt_sum = 0.0
        self.due_lag = 0.0  # the worst since the last heartbeat
        self.last_round_at: float | None = None

    def observe(self, outcome: Outcome) -> None:
        result = "ok" if outcome.ok else outcome.failure if outcome.failure in self.checks else "error"
        self.checks[result] += 1
        if outcome.ok and outcome.rtt_ms is not None:
            seconds = outcome.rtt_ms / 1000
            self.rtt_counts[bisect_left(RTT_BUCKETS, seconds)] += 1  # le: a value on a bound is in its bucket
            self.rtt_sum += seconds

    def claimed(self, lag: float) -> None:
        self.due_lag = max(self.due_lag, lag)

    def caught_up(self) -> None:
        """Every machine due has been claimed: a scheduling round is complete."""
        self.last_round_at = time.time()

    def snapshot(self) -> dict:
        """The heartbeat's `counters`; the due lag then starts again for the next heartbeat interval."""
        bounds = [floatToGoString(bound) for bound in (*RTT_BUCKETS, math.inf)]
        counters = {
            "since": self.since,
            "checks": dict(self.checks),
            "rtt_buckets": [[le, n] for le, n in zip(bounds, itertools.accumulate(self.rtt_counts), strict=True)],
            "rtt_sum": self.rtt_sum,
            "due_lag_seconds": self.due_lag,
            "last_round_at": self.last_round_at,
        }
        self.due_lag = 0.0
        return counters


class VxlanmgrCollector(Collector):
    """The inventory and the monitors alive, as they are in the database at this moment."""

    def __init__(self, per_machine: bool = True):
        self.per_machine = per_machine

    def collect(self) -> Iterator[Metric]:
        yield from self._machines()
        yield from self._monitors()

    def _machines(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "vxlanmgr_machine_up", "1 if the machine answered its last check (active), 0 if unreachable; "
            "pending machines (never checked yet) have no series.", labels=["vni", "hostname", "ip"])
        rtt = GaugeMetricFamily(
            "vxlanmgr_machine_rtt_seconds", "Round trip of an active machine's last answered check.",
            labels=["vni", "hostname", "ip"])
        if self.per_machine:
            # One query: the counts and the series come from the same rows. The loop is most of a scrape's
            # Python after the rendering: the counts are taken in C (Counter over itemgetter), each VNI is made
            # a string once, and the samples are appended as prometheus_client's own Sample tuples (what
            # add_metric would build, without its per-sample zip of label names and values).
            columns = ("status", "vni", "hostname", "ip_address", "last_rtt_ms")
            rows = list(Machine.objects.order_by().values_list(*columns))
            by_vni = Counter(map(itemgetter(0, 1), rows))
            vnis = {vni: "" if vni is None else str(vni) for _status, vni in by_vni}
            counts: Counter = Counter({(status, vnis[vni]): n for (status, vni), n in by_vni.items()})
            active, unreachable = Machine.Status.ACTIVE, Machine.Status.UNREACHABLE
            up_add, rtt_add, up_name, rtt_name = up.samples.append, rtt.samples.append, up.name, rtt.name
            for status, vni, hostname, ip, rtt_ms in rows:
                if status == active:
                    labels = {"vni": vnis[vni], "hostname": hostname, "ip": ip}
                    up_add(Sample(up_name, labels, 1.0))
                    if rtt_ms is not None:
                        rtt_add(Sample(rtt_name, labels, rtt_ms / 1000))
                elif status == unreachable:
                    up_add(Sample(up_name, {"vni": vnis[vni], "hostname": hostname, "ip": ip}, 0.0))
        else:
            counts = Counter()
            for status, vni, n in Machine.objects.order_by().values_list("status", "vni").annotate(n=Count("pk")):
                counts[status, "" if vni is None else str(vni)] += n
        machines = GaugeMetricFamily(
            "vxlanmgr_machines", "Machines in the inventory by status and VNI (empty: registered without one).",
            labels=["status", "vni"])
        # Every status of every VNI, zeros too, so a sum over a status is 0 rather than no data.
        for vni in sorted({vni for _status, vni in counts} or {""}):
            for status in Machine.Status.values:
                machines.add_metric([status, vni], counts[status, vni])
        yield machines
        if self.per_machine:
            yield up
            yield rtt

    def _monitors(self) -> Iterator[Metric]:
        beats = list(
            MonitorHeartbeat.objects.filter(last_beat_at__gte=timezone.now() - STALE_AFTER)
            .order_by("name")
            .values_list("name", "error", "counters")
        )
        alive = sum(1 for _name, error, _counters in beats if not error)
        yield GaugeMetricFamily(
            "vxlanmgr_monitors_alive",
            f"Monitors that sent a heartbeat in the last {STALE_AFTER.total_seconds():.0f} s and can send pings.",
            value=alive)
        checks = CounterMetricFamily(
            "vxlanmgr_checks", "Checks the monitor has recorded since it started, by result.",
            labels=["monitor", "result"])
        rtt = HistogramMetricFamily(
            "vxlanmgr_check_rtt_seconds", "Round trips of the answered checks since the monitor started.",
            labels=["monitor"])
        lag = GaugeMetricFamily(
            "vxlanmgr_monitor_due_lag_seconds",
            "The longest a machine waited past its due time before the monitor claimed it, over the last "
            "heartbeat interval (10 s).",
            labels=["monitor"])
        last_round = GaugeMetricFamily(
            "vxlanmgr_monitor_last_round_timestamp_seconds",
            "Unix time the monitor last had every due machine claimed (a scheduling round complete).",
            labels=["monitor"])
        for name, _error, counters in beats:
            if not isinstance(counters, dict) or "checks" not in counters:
                continue  # a monitor of a version that sent no counters
            since = counters.get("since")
            for result in RESULTS:
                checks.add_metric([name, result], counters["checks"].get(result, 0), created=since)
            if buckets := counters.get("rtt_buckets"):
                rtt.add_metric([name], [tuple(bucket) for bucket in buckets], counters.get("rtt_sum", 0.0))
            lag.add_metric([name], counters.get("due_lag_seconds", 0.0))
            if counters.get("last_round_at") is not None:
                last_round.add_metric([name], counters["last_round_at"])
        yield from (checks, rtt, lag, last_round)


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector held off for one scrape (it was on before: it is on after).

    A scrape with per-machine series holds ~20,000 `Sample`s (2 per machine) until the text is rendered.
    They are tuple subclasses, which the collector never untracks as it does plain tuples, so they survive
    into its oldest generation, and every second scrape paid a full collection of the whole process heap
    in the middle of its own work (~50 ms at 10,000 machines, more than the database read). Held off,
    reference counting frees the samples when the text is made and nothing of them is left for the collector
    (a stray cycle, here or in another thread, is collected afterwards as usual). Concurrent scrapes: the one
    that found the collector on turns it back on.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def exposition(per_machine: bool) -> bytes:
    """The text format of the families at this moment, by prometheus_client."""
    registry = CollectorRegistry()
    registry.register(VxlanmgrCollector(per_machine=per_machine))
    with cyclic_gc_paused():
        return generate_latest(registry)


def _from_allowed_network(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(getattr(request, "client_ip", ""))
    except ValueError:  # a Unix socket: no address
        return False
    return any(address in network for network in settings.METRICS_ALLOW)


def _denied(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may scrape: from VXLANMGR_METRICS_ALLOW, or with an API token."""
    if _from_allowed_network(request):
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    token = authenticate(header) if header else None
    if token is None:
        message = (_("The token is unknown or revoked.") if header
                   else _("Authentication required: send 'Authorization: Bearer <token>'."))
        return json_error(401, message, WWW_Authenticate='Bearer realm="vxlanmgr"')
    if token.scope != ApiToken.Scope.API:
        return json_error(403, _("A register token can only register its own address; use an API token."))
    return None


# CSRF-exempt (it only reads) so it runs like the JSON API: vxlanmgr.middleware.ApiShortcut serves it.
@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return json_error(405, _("Method not allowed."), Allow="GET, HEAD")
    denied = _denied(request)
    if denied:
        return denied
    response = HttpResponse(exposition(settings.METRICS_PER_MACHINE), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
