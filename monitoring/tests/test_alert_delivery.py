"""Alert delivery against real receivers: an HTTP server (Apprise's json://) and an SMTP server (aiosmtpd).

Alerts come from the real write path (checks.record_checks after a claim); the worker runs on an asyncio loop of
its own in a thread, or as `manage.py deliver_alerts` processes where killing one matters.
"""

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from machines.models import Machine
from monitoring import checks
from monitoring.alerts import delivery, messages, outbox, sending
from monitoring.models import AlertKind, Channel, FlapState, Notification, Silence
from monitoring.rules import Outcome
from tests.support.net import wait_for
from tests.support.processes import ROOT, process_env
from tests.support.receivers import HttpReceiver, SmtpReceiver

LEASE = timedelta(seconds=30)
DOWN = Outcome(ok=False, failure="timeout")
UP = Outcome(ok=True, rtt_ms=1.5)


@pytest.fixture
def fast(settings, monkeypatch):
    """One failed check makes a machine unreachable; the worker looks often and retries within seconds."""
    settings.CHECK_INTERVAL = 60
    settings.RETRY_INTERVAL = 10
    settings.FAILURE_THRESHOLD = 1
    settings.BACKOFF_MAX = 3600
    settings.NOTIFY_GROUP_WINDOW = 0
    settings.NOTIFY_GROUP_THRESHOLD = 5
    settings.BASE_URL = ""
    monkeypatch.setattr(delivery, "TICK", 0.1)
    monkeypatch.setattr(delivery, "CHORES_EVERY", 0.2)
    monkeypatch.setattr(delivery, "RETRY_FIRST", 0.5)
    monkeypatch.setattr(delivery, "RETRY_MAX", 2.0)
    return settings


@pytest.fixture
def machine(make_machine):
    """Active machines that no check claims until a test changes them."""

    def make(**fields):
        later = timezone.now() + timedelta(days=1)
        return make_machine(**({"status": "active", "last_seen_at": timezone.now(), "next_check_at": later} | fields))

    return make


def change(*machines: Machine, outcome: Outcome = DOWN) -> list[checks.StatusChange]:
    """Check these machines now with this outcome, as the monitor does: claim, then record."""
    ids = [m.pk for m in machines]
    Machine.objects.filter(pk__in=ids).update(next_check_at=timezone.now())
    token = uuid.uuid4().hex
    claimed = {m.pk for m in checks.claim_due(token, 1000, LEASE)}
    assert claimed == set(ids)
    return checks.record_checks(token, [checks.CheckRecord(pk, outcome) for pk in ids])


def channel(url: str, name: str = "ops", **fields) -> Channel:
    return Channel.objects.create(name=name, url=url, **fields)


@contextmanager
def running_worker(**options):
    """A DeliveryWorker on an event loop of its own, as in the monitor process; yields (worker, loop)."""
    worker = delivery.DeliveryWorker(name="test", **options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
    thread.start()
    try:
        yield worker, loop
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(15)
        assert not thread.is_alive(), "the worker did not stop"
        loop.close()


class WorkerProcess:
    """`manage.py deliver_alerts` against the test database."""

    def __init__(self, *args: str, **env: str):
        self.dir = Path(tempfile.mkdtemp(prefix="vxm-alerts-"))
        self.log_path = self.dir / "worker.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "deliver_alerts", *args], cwd=ROOT, env=process_env(**env),
                stdout=log, stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        wait_for(lambda: "alert delivery" in self.output() or self.process.poll() is not None, 30,
                 message="the worker to start")
        assert self.process.poll() is None, self.output()

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "WorkerProcess":
        self.wait_started()
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def sent(**filters) -> bool:
    rows = Notification.objects.filter(**filters)
    return rows.exists() and not rows.exclude(state=Notification.State.SENT).exists()


# -- what a message says --------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_webhook_and_a_mailbox_get_the_same_text_naming_everything(fast, machine):
    fast.BASE_URL = "https://vxlanmgr.example.net"
    fast.TIME_ZONE = "Asia/Tokyo"
    host = machine(hostname="db-1", ip_address="10.7.0.9", vni=4242)
    with HttpReceiver() as web, SmtpReceiver() as mail, running_worker():
        channel(web.url(), name="webhook")
        channel(mail.url(), name="mail")
        change(host)
        web.wait_for(1, 5)
        [letter] = mail.wait_for(1, 5)
        change(host, outcome=UP)
        web.wait_for(2, 5)
        mail.wait_for(2, 5)

    first, second = web.messages()
    assert first["title"] == letter.subject == "[vxlanmgr] db-1 (10.7.0.9) became unreachable"
    assert first["message"] == letter.body.rstrip("\n")
    body = first["message"]
    for text in ("Host: db-1", "IP address: 10.7.0.9", "VNI: 4242", "Event: Became unreachable",
                 "+09:00 (Asia/Tokyo)", "consecutive failed checks", f"https://vxlanmgr.example.net/machines/{host.pk}"):
        assert text in body
    assert first["type"] == "failure"
    assert second["title"] == "[vxlanmgr] db-1 (10.7.0.9) recovered"
    assert "outage of 0:00:0" in second["message"] and second["type"] == "success"
    assert mail.received()[1].subject == second["title"]
    rows = Notification.objects.all()
    assert rows.count() == 4 and all(row.state == "sent" and row.attempts == 1 and row.sent_at for row in rows)


def test_a_group_counts_each_event_and_names_the_first_twenty(settings):
    settings.BASE_URL = ""
    now = timezone.now()
    alerts = [
        Notification(kind=AlertKind.UNREACHABLE if n < 22 else AlertKind.RECOVERED, hostname=f"h{n:02d}",
                     ip_address=f"10.0.0.{n + 1}", vni=100, occurred_at=now + timedelta(seconds=n), machine_id=n + 1)
        for n in range(25)
    ]
    message = messages.render(Channel(name="x", language="en"), alerts)
    assert message.title == "[vxlanmgr] 22 machines became unreachable, 3 machines recovered"
    assert message.body.startswith("22 machines became unreachable\n3 machines recovered\n")
    assert "h19 (10.0.0.20)" in message.body and "h20" not in message.body
    assert "and 5 more" in message.body and "machines/" not in message.body
    # Japanese comes from locale/; until it is translated the text must still render.
    assert messages.render(Channel(name="x", language="ja"), alerts[:1]).title.startswith("[vxlanmgr] h00")


def test_reasons_never_carry_the_urls_credentials():
    url = "json://alice:hunter22@hooks.example.net/incoming/T0KENs3cret?rto=4&token=abcdef123456"
    text = "failed for alice:hunter22 at /incoming/T0KENs3cret with abcdef123456 to hooks.example.net"
    redacted = sending.redact(text, url)
    assert redacted.startswith("failed for *** at /") and redacted.endswith(" with *** to hooks.example.net")
    assert not any(secret in redacted for secret in ("alice", "hunter22", "T0KENs3cret", "abcdef123456"))
    assert sending.redact("bad slack://tokenA1/tokenB2", "slack://tokenA1/tokenB2") == "bad ***"


# -- the rules and claims -------------------------------------------------------------------------------------


def test_retries_back_off_from_5_s_doubling_up_to_10_minutes():
    assert [delivery.retry_delay(n) for n in (1, 2, 3, 7, 8, 50)] == [5, 10, 20, 320, 600, 600]


def test_a_channel_is_sent_to_once_an_alert_waited_the_window_or_a_group_is_complete():
    now = timezone.now()
    window = timedelta(seconds=10)

    def alerts(*ages: float, backing_off: int = 0) -> list[Notification]:
        fresh = [Notification(occurred_at=now - timedelta(seconds=age), next_attempt_at=now - timedelta(seconds=age))
                 for age in ages]
        later = now + timedelta(minutes=5)
        return fresh + [Notification(occurred_at=now - timedelta(hours=1), next_attempt_at=later)] * backing_off

    assert not delivery.ready(alerts(1, 2, 9), now, window, 5)
    assert delivery.ready(alerts(1, 2, 10), now, window, 5)
    # More than the threshold make a group, sent once it has stopped growing: no need to wait out the window.
    assert not delivery.ready(alerts(7, 7, 7, 7, 7, 7), now, window, 5)
    assert delivery.ready(alerts(9, 9, 9, 9, 9, 9), now, window, 5)
    assert delivery.ready(alerts(4, 4, 4, 4, 4, 4), now, timedelta(seconds=3), 5)  # no longer than the window
    # A storm still being written keeps its one group growing, up to a limit.
    assert not delivery.ready(alerts(40, 30, 20, 10, 1, 1), now, window, 5)
    assert delivery.ready(alerts(46, 30, 20, 10, 1, 1), now, window, 5)
    # Alerts still backing off are not due, but they join (and count toward) a group that is.
    assert not delivery.ready(alerts(backing_off=9), now, window, 5)
    assert delivery.ready(alerts(1, backing_off=5), now, window, 5)
    assert not delivery.ready(alerts(1, backing_off=4), now, window, 5)
    # A worker that saw the group grow counts the quiet from then: rows whose transaction began 9 s ago but
    # that it saw appear 7 s ago are no complete group yet; still, none waits longer than GROUP_MAX_WAIT.
    seven_ago, eight_ago = now - timedelta(seconds=7), now - timedelta(seconds=8)
    assert not delivery.ready(alerts(9, 9, 9, 9, 9, 9), now, window, 5, grew_at=seven_ago)
    assert delivery.ready(alerts(9, 9, 9, 9, 9, 9), now, window, 5, grew_at=eight_ago)
    assert delivery.ready(alerts(46, 9, 9, 9, 9, 9), now, window, 5, grew_at=now)
    # A lone alert waits the window, whatever the worker saw.
    assert delivery.ready(alerts(10), now, window, 5, grew_at=now)


@pytest.mark.django_db
def test_a_group_is_held_while_the_worker_sees_it_grow_and_sent_whole_once_it_stops(fast):
    """The storm of make bench: the monitor commits batch after batch, each one's rows dated when its
    transaction began. Judged by those dates alone, a group looked quiet while a slow batch was still being
    written, and went out without it."""
    fast.NOTIFY_GROUP_WINDOW = 10
    ops = channel("json://127.0.0.1:9/x")
    start = timezone.now()
    growth = delivery.Growth()

    def batch(size: int, began: float) -> None:
        at = start + timedelta(seconds=began)
        Notification.objects.bulk_create(
            [Notification(channel=ops, kind=AlertKind.UNREACHABLE, hostname=f"h{n}", occurred_at=at,
                          next_attempt_at=at) for n in range(size)],
        )

    def claim(at: float, memory: delivery.Growth = growth) -> list[delivery.Batch]:
        return delivery.claim("w", 8, send_timeout=30, now=start + timedelta(seconds=at), growth=memory)

    batch(1000, began=0)
    assert claim(1) == []
    # The next batch began at 0.5 s and is seen at 6 s: at 9 s its rows are 8.5 s old, but the group grew 3 s ago.
    batch(1000, began=0.5)
    assert claim(6) == []
    assert claim(9) == []
    assert claim(13.9) == []
    # A worker that has just started has not seen it stop growing: it waits the quiet time itself.
    assert claim(14, memory=delivery.Growth()) == []
    [whole] = claim(14)
    assert whole.size == 2000 and len(whole.parts) == 1



@pytest.mark.django_db
def test_a_claim_hides_a_channels_alerts_from_other_workers_until_its_lease_lapses(fast):
    ops = channel("json://127.0.0.1:9/x")
    outbox.write(AlertKind.MONITOR_DOWN)
    [batch] = delivery.claim("one", 8, send_timeout=30)
    assert batch.channel == ops and batch.size == 1
    assert delivery.claim("two", 8, send_timeout=30) == []
    later = timezone.now() + delivery.lease(1, 30) + timedelta(seconds=1)
    assert [b.size for b in delivery.claim("two", 8, send_timeout=30, now=later)] == [1]


# -- delivery guarantees --------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_receiver_down_for_30_s_gets_the_alert_once_it_is_back(fast, machine):
    host = machine(hostname="edge-1")
    web = HttpReceiver()
    channel(web.url())
    with running_worker():
        change(host)
        down_since = time.monotonic()
        time.sleep(30)
        row = Notification.objects.get()
        assert row.state == "pending" and row.attempts >= 5 and "Connection error" in row.last_error
        web.start()
        try:
            [request] = web.wait_for(1, 5)
            wait_for(lambda: sent(), 5, message="the alert to be marked sent")
            time.sleep(1)
        finally:
            web.stop()
    assert request.received_at - down_since >= 30
    assert len(web.received()) == 1 and "edge-1" in request.json()["title"]


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_repeats_at_most_one_alert_and_loses_none(fast, machine):
    hosts = [machine(hostname=f"kill-{n}") for n in range(2)]
    # The receiver holds each request 0.6 s: long enough to kill the worker while it waits for the answer.
    with HttpReceiver(delay=0.6) as web:
        channel(web.url())
        change(*hosts)
        worker = WorkerProcess("--send-timeout", "1", VXLANMGR_NOTIFY_GROUP_WINDOW="0")
        try:
            web.wait_for(1, 30)
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(10)
            assert not Notification.objects.filter(state="sent").exists()
            # Another worker takes the alerts over once the dead one's claim lapses.
            with running_worker():
                wait_for(lambda: sent(), 15, message="every alert to be sent")
        finally:
            worker.cleanup()
        received = [m["title"] for m in web.messages()]
    counts = {host.hostname: sum(host.hostname in title for title in received) for host in hosts}
    assert all(1 <= count <= 2 for count in counts.values()), counts
    assert sum(counts.values()) - len(hosts) <= 1, counts


@pytest.mark.django_db(transaction=True)
def test_two_workers_send_each_alert_exactly_once(fast, machine):
    """A `deliver_alerts` process beside the worker of a monitor process (here: this one)."""
    fast.NOTIFY_GROUP_THRESHOLD = 1000
    hosts = [machine(hostname=f"pair-{n:02d}") for n in range(8)]
    # More channels than one worker sends to at once (SENDERS), so both have work.
    paths = [f"/channel-{n:02d}" for n in range(delivery.SENDERS + 4)]
    with HttpReceiver(delay=0.05) as web, WorkerProcess(
        VXLANMGR_NOTIFY_GROUP_WINDOW="0", VXLANMGR_NOTIFY_GROUP_THRESHOLD="1000",
    ) as process, running_worker() as (worker, _loop):
        for path in paths:
            channel(web.url(path), name=path)
        for n in range(0, len(hosts), 2):
            change(*hosts[n:n + 2])
            time.sleep(0.1)
        total = len(hosts) * len(paths)
        wait_for(lambda: Notification.objects.filter(state="sent").count() == total, 30,
                 message=f"{total} alerts sent\n{process.output()}")
        time.sleep(0.5)
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(15) == 0
        log = process.output()
    for path in paths:
        titles = sorted(m["title"] for m in web.messages(path))
        assert titles == sorted(f"[vxlanmgr] {h.hostname} ({h.ip_address}) became unreachable" for h in hosts)
    assert worker.stats["sent"] and "sent unreachable" in log and "stopped" in log


@pytest.mark.django_db(transaction=True)
def test_a_slow_receiver_delays_neither_other_channels_nor_checks(fast, machine):
    first = machine(hostname="first", vni=100)
    second = machine(hostname="second", vni=200)
    with HttpReceiver(delay=10) as slow, HttpReceiver() as quick, running_worker() as (_worker, loop):
        # The slow channel waits up to 15 s for an answer; it wants VNI 100 only.
        channel(slow.url(query="rto=15"), name="slow", vnis=[100])
        channel(quick.url(), name="quick")
        changed = time.monotonic()
        change(first)
        quick.wait_for(1, 2)
        slow.wait_for(1, 2)
        assert quick.received()[0].received_at - changed < 2

        # The slow request is still waiting for its answer: the monitor's write path and loop are free.
        async def loop_lag() -> float:
            lag = 0.0
            for _ in range(10):
                before = time.monotonic()
                await asyncio.sleep(0.05)
                lag = max(lag, time.monotonic() - before - 0.05)
            return lag

        probe = asyncio.run_coroutine_threadsafe(loop_lag(), loop)
        started = time.monotonic()
        assert [c.machine.hostname for c in change(second)] == ["second"]
        assert time.monotonic() - started < 1
        [_, request] = quick.wait_for(2, 2)
        assert request.received_at - started < 2 and "second" in request.json()["title"]
        assert probe.result(5) < 1.0
        assert Notification.objects.get(channel__name="slow").state == "pending"

        wait_for(lambda: sent(channel__name="slow"), 12, message="the slow channel's alert to be sent")
    assert len(slow.received()) == 1


@pytest.mark.django_db(transaction=True)
def test_six_changes_within_the_window_make_one_message_per_channel(fast, machine):
    fast.NOTIFY_GROUP_WINDOW = 3
    hosts = [machine(hostname=f"rack-{n}") for n in range(7)]
    with HttpReceiver() as web, SmtpReceiver() as mail, running_worker():
        channel(web.url(), name="webhook")
        channel(mail.url(), name="mail")
        change(*hosts[:3])
        time.sleep(1)
        started = time.monotonic()
        change(*hosts[3:6])
        # More than the threshold (5) pending: no need to wait out the window.
        [request] = web.wait_for(1, 10)
        [letter] = mail.wait_for(1, 10)
        assert request.received_at - started < 10
        time.sleep(1)
        assert len(web.received()) == 1 and len(mail.received()) == 1

        # A lone alert waits the window for company, and no longer.
        started = time.monotonic()
        change(hosts[6])
        [_, alone] = web.wait_for(2, 5)
        assert 2.8 <= alone.received_at - started <= 4.5

    group = request.json()
    assert group["title"] == letter.subject == "[vxlanmgr] 6 machines became unreachable"
    assert group["message"] == letter.body.rstrip("\n")
    assert all(host.hostname in group["message"] for host in hosts[:6])
    assert "rack-6" in alone.json()["title"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(AlertKind))
def test_every_kind_of_alert_makes_a_message_alone_and_in_a_group(kind, settings):
    settings.BASE_URL = ""
    ops = channel("json://localhost")
    alert = Notification(channel=ops, kind=kind, hostname="lab-monitor-100", vni=100, detail="VNI 100: link down",
                         occurred_at=timezone.now())
    assert "lab-monitor-100" in messages.render(ops, [alert]).title or kind in (AlertKind.MONITOR_DOWN,
                                                                                 AlertKind.MONITOR_BACK)
    other = Notification(channel=ops, kind=AlertKind.UNREACHABLE, hostname="h1", ip_address="10.0.0.1", vni=100,
                         occurred_at=timezone.now())
    body = messages.render(ops, [alert, other]).body
    assert "h1 (10.0.0.1)" in body and "lab-monitor-100" in body


@pytest.mark.django_db(transaction=True)
def test_every_host_behind_one_vtep_failing_is_sent_as_that_vtep(fast, machine):
    behind = [machine(hostname=f"vm-{n}", vtep="192.0.2.5", vni=100) for n in range(8)]
    other = machine(hostname="elsewhere", vtep="192.0.2.9", vni=100)
    with HttpReceiver() as web, running_worker():
        channel(web.url())
        change(*behind, other)
        [request] = web.wait_for(1, 10)
    body = request.json()
    assert body["title"] == "[vxlanmgr] 9 machines became unreachable (including all hosts behind VTEP 192.0.2.5)"
    assert "- all 8 hosts behind VTEP 192.0.2.5, VNI 100: Became unreachable" in body["message"]
    assert "vm-" not in body["message"] and "elsewhere" in body["message"]


@pytest.mark.django_db(transaction=True)
def test_an_alert_that_cannot_be_delivered_fails_after_the_max_age_with_its_reason(fast, machine, caplog):
    fast.NOTIFY_MAX_AGE = 2
    host = machine()
    closed = HttpReceiver()  # never started: nothing listens on its port
    url = closed.url(path="/hooks/T0KENs3cret99").replace("json://", "json://alice:hunter22@")
    channel(url, name="broken")
    with caplog.at_level("INFO", logger="vxlanmgr"), running_worker():
        change(host)
        wait_for(lambda: Notification.objects.filter(state="failed").exists(), 5, message="the alert to fail")
    row = Notification.objects.get()
    assert row.attempts >= 2 and row.sent_at is None
    assert (row.next_attempt_at - row.occurred_at) <= timedelta(seconds=2)
    assert "Connection error" in row.last_error
    assert "'broken' (#" in caplog.text and "given up" in caplog.text
    for secret in ("hunter22", "T0KENs3cret99", url):
        assert secret not in row.last_error and secret not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_flapping_machine_gets_one_flapping_alert_then_one_stable_alert(fast, machine):
    fast.FLAP_LIMIT = 2
    fast.FLAP_STABLE_MINUTES = 1 / 60
    host = machine(hostname="flappy")
    with HttpReceiver() as web, running_worker():
        channel(web.url())
        for outcome in (DOWN, UP, DOWN, UP, DOWN):
            change(host, outcome=outcome)
        last_change = time.monotonic()
        web.wait_for(4, 5)
        time.sleep(0.5)
    titles = [m["title"] for m in web.messages()]
    assert titles == [f"[vxlanmgr] flappy ({host.ip_address}) {event}"
                      for event in ("became unreachable", "recovered", "is flapping", "is stable again")]
    assert web.received()[3].received_at - last_change >= 1
    assert "now unreachable" in web.messages()[3]["message"]
    assert not FlapState.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_silence_holds_alerts_and_then_announces_what_is_still_unreachable(fast, machine):
    back, still, covered = (machine(hostname=name, vni=100) for name in ("back", "still", "covered"))
    elsewhere = machine(hostname="elsewhere", vni=200)
    now = timezone.now()
    ending = Silence.objects.create(vni=100, ends_at=now + timedelta(seconds=2), reason="maintenance")
    Silence.objects.create(machine=covered, ends_at=now + timedelta(hours=1), reason="replacing its disk")
    with HttpReceiver() as web, running_worker():
        channel(web.url())
        change(back, still, covered, elsewhere)
        change(back, outcome=UP)
        [request] = web.wait_for(1, 5)
        assert "elsewhere" in request.json()["title"]
        assert Notification.objects.count() == 1
        web.wait_for(2, 5)
        time.sleep(0.5)
    titles = [m["title"] for m in web.messages()]
    assert titles[1:] == [f"[vxlanmgr] still ({still.ip_address}) is still unreachable after a silence"]
    ending.refresh_from_db()
    assert ending.concluded_at is not None
    assert Notification.objects.filter(kind=AlertKind.STILL_UNREACHABLE).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_deciding_at_once_take_a_channels_whole_group_or_none_of_it(fast):
    """Each worker reads a channel's pending rows under lock before deciding: with SKIP LOCKED one could see
    only the older rows (the other holding the rest) and send them as a "complete" group of their own."""
    from django.db import connections

    fast.NOTIFY_GROUP_WINDOW = 10
    ops = channel("json://127.0.0.1:9/x")
    old = timezone.now() - timedelta(seconds=30)
    rounds, rows = 6, 6000
    Notification.objects.bulk_create(
        [Notification(channel=ops, kind=AlertKind.UNREACHABLE, hostname=f"h{n}", occurred_at=old,
                      next_attempt_at=old) for n in range(rows)], batch_size=2000,
    )
    for _ in range(rounds):
        start = threading.Barrier(2)
        sizes: dict[str, list[int]] = {}

        def take(token: str, sizes=sizes, start=start) -> None:
            try:
                start.wait()
                sizes[token] = [batch.size for batch in delivery.claim(token, 8, send_timeout=30)]
            finally:
                connections.close_all()

        threads = [threading.Thread(target=take, args=(token,)) for token in ("one", "two")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(sizes.values()) == [[], [rows]], sizes
        Notification.objects.update(claimed_until=None, claim_token="")


def test_alerts_standing_in_for_a_state_change_reach_channels_that_take_that_change():
    states = Channel(name="states", url="json://localhost", events=["unreachable", "recovered"])
    down_only = Channel(name="down", url="json://localhost", events=["unreachable"])
    deletions = Channel(name="deletions", url="json://localhost", events=["deleted"])
    for kind in (AlertKind.FLAPPING, AlertKind.STABLE, AlertKind.STILL_UNREACHABLE):
        assert states.wants(kind, 100)
        assert not deletions.wants(kind, 100)
    assert down_only.wants(AlertKind.STILL_UNREACHABLE, None) and down_only.wants(AlertKind.FLAPPING, None)
    assert not down_only.wants(AlertKind.RECOVERED, None)
