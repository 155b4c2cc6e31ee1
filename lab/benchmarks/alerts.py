"""Alerts: from a status change committed by the monitor's write path to the message at a webhook receiver.

Two real delivery workers share the outbox, as in a deployment: `manage.py deliver_alerts` (the worker the monitor
runs, here on its own; its log is alerts-worker.log) and the one in the harness's web server (`manage.py serve`
always runs one; server.log, warnings only). They send through Apprise's json:// to recording HTTP receivers on
127.0.0.1 (tests/support/receivers.py) in the bench process;
the channels only take `unreachable` and `recovered`, so nothing else (the web server's monitor_down watch: no
monitor runs during this part) reaches them. The group settings are the defaults the worker reads.

* Latency: single changes, one after the other. A producer claims an active machine (a different one each
  time: one machine changing again and again would be flapping) and commits a failed check that makes it
  unreachable through :func:`monitoring.checks.record_checks`, which writes the alert in that transaction. The
  clock runs from that commit to the request arriving at the receiver. The next change comes after the
  alert arrived (and a pause), so each one is alone in its group window: a lone alert waits the window for
  company, which is the floor of this figure.
* Storm: every machine fails at once. All N are claimed, one check short of unreachable, and the failures are
  recorded in batches of VXLANMGR_PING_CONCURRENCY, back to back, as the monitor records its batches; 3
  channels. Counted: messages per channel and machines named in them, and the time from the first commit to
  the last channel's last message.
"""

from __future__ import annotations

import itertools
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

from .common import ROOT, Row, child_env, percentile, wait_for

CHANGES = 50
STORM_CHANNELS = 3
STORM_BUDGET = 60.0
# After the last message, this long without another one (several worker ticks) before messages are counted.
SETTLE = 3.0
EVENTS = ["unreachable", "recovered"]
# A group's title counts each kind; a machine that had changed state often in the last hour (the push
# benchmark flips some) is announced as flapping instead, in the same message.
_COUNT = re.compile(r"(\d+) machines? (?:became unreachable|(?:is|are) flapping)")


class Worker:
    """`manage.py deliver_alerts` on the benchmark database, logging to the run's log directory."""

    def __init__(self, log_dir):
        self.log_path = log_dir / "alerts-worker.log"

    def __enter__(self) -> Worker:
        self.log = open(self.log_path, "ab")
        env = child_env(VXLANMGR_LOG_LEVEL="INFO", VXLANMGR_NOTIFY_URLS=None, VXLANMGR_NOTIFY_URLS_FILE=None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_alerts"], cwd=ROOT, env=env, stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._started, 60, 0.1, "the delivery worker to start")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _started(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"deliver_alerts exited with {self.process.returncode}; see {self.log_path}")
        return "alert delivery" in self.log_path.read_text(errors="replace")

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def _reset_alerts() -> None:
    from django.db import connection

    from monitoring.models import Channel, FlapState, Notification, Silence, Watch

    tables = [model._meta.db_table for model in (Notification, Channel, FlapState, Silence, Watch)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def _channels(receivers) -> None:
    from monitoring.models import Channel

    Channel.objects.bulk_create(
        [Channel(name=f"bench {i}", url=receiver.url(f"/bench{i}"), events=EVENTS) for i, receiver in
         enumerate(receivers)]
    )


def _claim(ids: list[int], token: str, last_failure: bool) -> None:
    """Claim these machines as the monitor would; `last_failure`: active, one failed check short of unreachable."""
    from django.conf import settings
    from django.utils import timezone

    from machines.models import Machine

    fields = {"claim_token": token, "claimed_until": timezone.now() + timedelta(minutes=10)}
    if last_failure:
        fields |= {"status": Machine.Status.ACTIVE, "consecutive_failures": settings.FAILURE_THRESHOLD - 1,
                   "unreachable_since": None}
    Machine.objects.filter(pk__in=ids).update(**fields)


def _fail(ids: list[int], token: str) -> int:
    """Record a failed check for each machine, in one transaction; returns how many changed status."""
    from monitoring import checks
    from monitoring.rules import Outcome

    down = Outcome(ok=False, rtt_ms=None, failure="timeout")
    return len(checks.record_checks(token, [checks.CheckRecord(pk, down, 1.0) for pk in ids]))


# ---------------------------------------------------------------------------------------------- latency


def _latency(ctx, receiver, ids: list[int], changes: int) -> list[float]:
    from machines.models import Machine

    window = _window()
    latencies = []
    for k, pk in enumerate(ids[:changes]):
        token = uuid.uuid4().hex
        _claim([pk], token, last_failure=True)
        before = len(receiver.received())
        if _fail([pk], token) != 1:
            raise RuntimeError(f"machine {pk} did not become unreachable")
        committed = time.monotonic()
        wait_for(lambda before=before: len(receiver.received()) > before, window + 60, 0.01,
                 f"the alert of change {k}")
        request = receiver.received()[before]
        ip = Machine.objects.values_list("ip_address", flat=True).get(pk=pk)
        if ip not in request.json().get("title", ""):
            raise RuntimeError(f"change {k}: the message does not name {ip}: {request.json().get('title')!r}")
        latencies.append(request.received_at - committed)
        if k % 10 == 9:
            ctx.log(f"alerts: {k + 1} of {changes} changes, latest {latencies[-1]:.2f} s")
        time.sleep(random.uniform(0.2, 0.7))  # noqa: S311  a pause off the worker's 0.5 s tick
    if len(receiver.received()) != len(latencies):
        raise RuntimeError(f"{len(receiver.received())} messages for {len(latencies)} changes")
    return latencies


def _window() -> float:
    from django.conf import settings

    return float(settings.NOTIFY_GROUP_WINDOW)


# ---------------------------------------------------------------------------------------------- storm


def _storm(receivers, ids: list[int]) -> dict:
    from django.conf import settings

    from monitoring.models import Notification

    token = uuid.uuid4().hex
    _claim(ids, token, last_failure=True)
    batch = settings.PING_CONCURRENCY
    started = time.monotonic()
    changed, commits = 0, []
    for i in range(0, len(ids), batch):
        changed += _fail(ids[i:i + batch], token)
        commits.append(time.monotonic() - started)
    committed = commits[-1]
    if changed != len(ids):
        raise RuntimeError(f"{changed} of {len(ids)} machines became unreachable")

    def settled() -> bool:
        if Notification.objects.filter(state=Notification.State.PENDING).exists():
            return False
        last = max((r.received_at for receiver in receivers for r in receiver.received()), default=started)
        return time.monotonic() - last >= SETTLE

    try:
        wait_for(settled, STORM_BUDGET + _window() + 120, 0.2, "every storm alert to be sent")
    except TimeoutError:
        pass  # reported: the rows not sent, and the messages that did arrive
    per_channel, named, last = [], [], 0.0
    for receiver in receivers:
        requests = receiver.received()
        per_channel.append(len(requests))
        named.append(sum(_count(request.json().get("title", "")) for request in requests))
        last = max([last, *(request.received_at - started for request in requests)])
    failed = Notification.objects.exclude(state=Notification.State.SENT).count()
    gap = max(b - a for a, b in itertools.pairwise([0.0, *commits]))
    return {"batches": -(-len(ids) // batch), "batch": batch, "commit_s": committed, "longest_commit_s": gap,
            "messages": per_channel,
            "named": named, "last_s": last, "not_sent": failed}


def _count(title: str) -> int:
    counts = _COUNT.findall(title)
    if counts:
        return sum(int(count) for count in counts)
    return 1 if title.endswith(("became unreachable", "is flapping")) else 0


# ---------------------------------------------------------------------------------------------- run


def run(ctx, n: int, changes: int = CHANGES, latency: bool = True) -> list[Row]:
    from django.conf import settings

    from machines.models import Machine
    from tests.support.receivers import HttpReceiver

    from .common import apply_mix

    area, rows = "Alerts", []
    window, threshold = _window(), settings.NOTIFY_GROUP_THRESHOLD
    _reset_alerts()
    ids = list(Machine.objects.order_by("pk").values_list("pk", flat=True))
    try:
        with Worker(ctx.log_dir):
            if latency:
                with HttpReceiver() as receiver:
                    _channels([receiver])
                    active = list(Machine.objects.filter(status=Machine.Status.ACTIVE).order_by("?")
                                  .values_list("pk", flat=True)[:changes])
                    lat = _latency(ctx, receiver, active, changes)
                p50, p95 = percentile(lat, 50), percentile(lat, 95)
                ctx.raw[f"alerts_latency_{n}"] = lat
                ctx.log(f"alerts N={n}: commit → receiver p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(lat):.2f} s")
                note = (f"{len(lat)} single changes, one after the other; max {max(lat):.2f} s, min {min(lat):.2f} s; "
                        "one channel (json:// on loopback)")
                reference = f"group window {window:g} s: a lone alert waits it for company"
                rows += [
                    Row(area, "status change committed → message at the receiver: p50", round(p50, 2), "s", n,
                        reference=reference, note=note),
                    Row(area, "status change committed → message at the receiver: p95", round(p95, 2), "s", n,
                        reference=reference, target=f"< {window + 2:g} s (window + 2 s)", met=p95 < window + 2,
                        note=note),
                ]
                _reset_alerts()
            receivers = [HttpReceiver().start() for _ in range(STORM_CHANNELS)]
            try:
                _channels(receivers)
                storm = _storm(receivers, ids)
            finally:
                for receiver in receivers:
                    receiver.stop()
    finally:
        _reset_alerts()
        apply_mix()
    ctx.raw[f"alerts_storm_{n}"] = storm
    ctx.log(f"alerts N={n}: storm of {n} changes in {storm['batches']} commits ({storm['commit_s']:.1f} s, the longest "
            f"{storm['longest_commit_s']:.1f} s): messages "
            f"per channel {storm['messages']}, machines named {storm['named']}, last after {storm['last_s']:.1f} s")
    one_each = all(count == 1 for count in storm["messages"])
    complete = all(count == n for count in storm["named"]) and not storm["not_sent"]
    within = storm["last_s"] < STORM_BUDGET
    messages = ", ".join(str(count) for count in storm["messages"])
    rows += [
        Row(area, f"{n:,} machines unreachable at once: messages per channel", messages, "messages", n,
            reference=f"{STORM_CHANNELS} channels; group threshold {threshold}, window {window:g} s",
            target=f"exactly 1 per channel within {STORM_BUDGET:g} s", met=one_each and within and complete,
            note=f"recorded in {storm['batches']} transaction{'s' if storm['batches'] > 1 else ''} of ≤ "
                 f"{storm['batch']:,} "
                 f"(VXLANMGR_PING_CONCURRENCY), {storm['commit_s']:.1f} s in all, the longest "
                 f"{storm['longest_commit_s']:.1f} s; machines counted in the "
                 f"messages per channel: {', '.join(f'{count:,}' for count in storm['named'])}"
                 + (f"; {storm['not_sent']} alert rows not sent" if storm["not_sent"] else "")),
        Row(area, f"{n:,} machines unreachable at once: first commit → last message", round(storm["last_s"], 1),
            "s", n, target=f"< {STORM_BUDGET:g} s", met=within,
            note="the last message of any channel"),
    ]
    return rows
