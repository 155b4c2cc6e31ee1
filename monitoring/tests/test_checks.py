"""record_checks against the configured database (SQLite or PostgreSQL): one batch, every kind of outcome."""

from datetime import timedelta

import pytest
from django.utils import timezone

from machines import services
from machines.models import Machine, MachineEvent
from machines.validation import Registration
from monitoring import checks
from monitoring.models import PingResult
from monitoring.rules import Outcome

LEASE = timedelta(seconds=30)


@pytest.fixture
def rules(settings):
    settings.CHECK_INTERVAL = 60
    settings.RETRY_INTERVAL = 10
    settings.FAILURE_THRESHOLD = 3
    settings.BACKOFF_MAX = 3600


def _claim(token: str, now) -> dict[str, Machine]:
    return {m.hostname: m for m in checks.claim_due(token, 100, LEASE, now=now)}


@pytest.mark.django_db
def test_a_mixed_batch_writes_exactly_its_state_results_and_log_entries(make_machine, rules):
    start = timezone.now()
    seen = start - timedelta(hours=1)
    down = start - timedelta(minutes=10)
    now = start + timedelta(minutes=1)
    make_machine(hostname="fresh")  # pending, never answered: every nullable field is NULL
    make_machine(hostname="failing", status="active", consecutive_failures=2, last_seen_at=seen)
    make_machine(
        hostname="recovering", status="unreachable", consecutive_failures=7, check_interval=120,
        unreachable_since=down, last_rtt_ms=3.5, last_seen_at=seen,
    )
    make_machine(
        hostname="backoff", status="unreachable", consecutive_failures=4, check_interval=120, unreachable_since=down,
    )
    make_machine(hostname="retry", status="active", last_rtt_ms=2.0, last_seen_at=seen)
    deleted = make_machine(hostname="deleted", status="unreachable", unreachable_since=down)
    reregistered = make_machine(
        hostname="reregistered", status="unreachable", consecutive_failures=5, check_interval=480,
        unreachable_since=down,
    )
    taken = make_machine(hostname="taken", status="active")
    claimed = _claim("mon", now)
    assert set(claimed) == {m.hostname for m in Machine.objects.all()}
    before = {m.hostname: m for m in Machine.objects.all()}

    # Between the claim and the write: one machine is deleted, one re-registers, one is claimed by another monitor.
    services.delete_machine(deleted.pk, actor="operator", force=True)
    services.register_machine(
        Registration(ip_address=reregistered.ip_address, hostname="reregistered", mac_address=reregistered.mac_address)
    )
    Machine.objects.filter(pk=taken.pk).update(claim_token="other")
    outcomes = {
        "fresh": (Outcome(ok=True, rtt_ms=0.5), 0.0),
        "failing": (Outcome(ok=False, failure="timeout"), 1.0),
        "recovering": (Outcome(ok=True, rtt_ms=1.25), 0.5),
        "backoff": (Outcome(ok=False, failure="unreachable"), 1.0),
        "retry": (Outcome(ok=False, failure="error"), 1.0),
        "deleted": (Outcome(ok=True, rtt_ms=9.0), 0.0),
        "reregistered": (Outcome(ok=True, rtt_ms=9.0), 0.0),
        "taken": (Outcome(ok=False, failure="timeout"), 1.0),
    }
    records = [checks.CheckRecord(claimed[name].pk, outcome, loss) for name, (outcome, loss) in outcomes.items()]

    changes = checks.record_checks("mon", records, now=now)

    assert sorted((c.machine.hostname, c.previous, c.decision.state.status, c.decision.event) for c in changes) == [
        ("failing", "active", "unreachable", "unreachable"),
        ("fresh", "pending", "active", None),
        ("recovering", "unreachable", "active", "recovered"),
    ]
    after = {m.hostname: m for m in Machine.objects.all()}
    fields = [
        "status", "consecutive_failures", "check_interval", "unreachable_since", "next_check_at", "last_checked_at",
        "last_rtt_ms", "last_failure_kind", "last_seen_at", "claimed_until", "claim_token", "updated_at",
    ]
    state = {name: {f: getattr(m, f) for f in fields} for name, m in after.items()}
    written = {"claimed_until": None, "claim_token": "", "last_checked_at": now}
    assert state["fresh"] == {
        **written, "status": "active", "consecutive_failures": 0, "check_interval": None, "unreachable_since": None,
        "next_check_at": now + timedelta(seconds=60), "last_rtt_ms": 0.5, "last_failure_kind": "",
        "last_seen_at": now, "updated_at": now,
    }
    assert state["failing"] == {
        **written, "status": "unreachable", "consecutive_failures": 3, "check_interval": 60,
        "unreachable_since": now, "next_check_at": now + timedelta(seconds=60), "last_rtt_ms": None,
        "last_failure_kind": "timeout", "last_seen_at": seen, "updated_at": now,
    }
    assert state["recovering"] == {
        **written, "status": "active", "consecutive_failures": 0, "check_interval": None, "unreachable_since": None,
        "next_check_at": now + timedelta(seconds=60), "last_rtt_ms": 1.25, "last_failure_kind": "",
        "last_seen_at": now, "updated_at": now,
    }
    # No status change: updated_at keeps its value, and a failure keeps the last round trip and sighting.
    assert state["backoff"] == {
        **written, "status": "unreachable", "consecutive_failures": 5, "check_interval": 240,
        "unreachable_since": down, "next_check_at": now + timedelta(seconds=240), "last_rtt_ms": None,
        "last_failure_kind": "unreachable", "last_seen_at": None, "updated_at": before["backoff"].updated_at,
    }
    assert state["retry"] == {
        **written, "status": "active", "consecutive_failures": 1, "check_interval": None, "unreachable_since": None,
        "next_check_at": now + timedelta(seconds=10), "last_rtt_ms": 2.0, "last_failure_kind": "error",
        "last_seen_at": seen, "updated_at": before["retry"].updated_at,
    }
    # Skipped: the re-registration's schedule and the other monitor's claim stand.
    assert "deleted" not in state
    assert state["reregistered"]["status"] == "unreachable"
    assert state["reregistered"]["consecutive_failures"] == 5
    assert state["reregistered"]["check_interval"] == 60
    assert state["reregistered"]["claim_token"] == "" and state["reregistered"]["last_checked_at"] is None
    assert state["taken"] == {f: getattr(before["taken"], f) for f in fields} | {"claim_token": "other"}

    results = sorted(
        (r.machine.hostname, r.checked_at, r.ok, r.rtt_ms, r.loss, r.failure)
        for r in PingResult.objects.select_related("machine")
    )
    assert results == [
        ("backoff", now, False, None, 1.0, "unreachable"),
        ("failing", now, False, None, 1.0, "timeout"),
        ("fresh", now, True, 0.5, 0.0, ""),
        ("recovering", now, True, 1.25, 0.5, ""),
        ("retry", now, False, None, 1.0, "error"),
    ]
    entries = sorted((e.hostname, e.machine_id, e.kind, e.detail) for e in MachineEvent.objects.all())
    assert entries == [
        ("deleted", None, "deleted", entries[0][3]),
        ("failing", after["failing"].pk, "unreachable",
         "3 consecutive failed checks; failure: timeout; last round trip seen: never answered"),
        ("recovering", after["recovering"].pk, "recovered",
         "answered again after an outage of 0:11:00; round trip 1.25 ms"),
    ]
    assert entries[0][3].startswith("deleted while unreachable")


@pytest.mark.django_db
def test_the_longest_overdue_machines_are_claimed_first_and_only_once(make_machine):
    now = timezone.now()
    for minutes in (1, 5, 3, 2, 4):
        make_machine(hostname=f"late-{minutes}", status="active", next_check_at=now - timedelta(minutes=minutes))
    make_machine(hostname="not-yet", status="active", next_check_at=now + timedelta(seconds=30))
    make_machine(hostname="held", status="active", next_check_at=now - timedelta(hours=1),
                 claim_token="other", claimed_until=now + timedelta(seconds=5))

    first = checks.claim_due("mon", 3, LEASE, now=now)
    second = checks.claim_due("mon", 3, LEASE, now=now)

    assert [m.hostname for m in first] == ["late-5", "late-4", "late-3"]
    assert [m.hostname for m in second] == ["late-2", "late-1"]
    assert checks.claim_due("mon", 3, LEASE, now=now) == []
    # What the monitor pings and judges comes with the claim.
    stored = {m.hostname: m for m in Machine.objects.all()}
    for machine in first + second:
        assert (machine.ip_address, machine.status, machine.next_check_at, machine.vni) == (
            stored[machine.hostname].ip_address, "active", stored[machine.hostname].next_check_at, 100)
        assert (stored[machine.hostname].claim_token, stored[machine.hostname].claimed_until) == ("mon", now + LEASE)
    assert (stored["not-yet"].claim_token, stored["held"].claim_token) == ("", "other")


@pytest.mark.django_db
def test_a_full_batch_of_results_is_written_exactly(make_machine, rules):
    """A monitor's batch is 1,000 machines: every one's state and result arrive, to the microsecond and the bit."""
    now = timezone.now()
    for n in range(1000):
        make_machine(hostname=f"batch-{n:04d}", ip_address=f"10.9.{n // 250}.{n % 250 + 1}", status="active",
                     next_check_at=now - timedelta(seconds=1))
    claimed = checks.claim_due("mon", 1000, LEASE, now=now)
    assert len(claimed) == 1000
    rtt = {machine.pk: 0.1 + machine.pk / 7 for machine in claimed}  # floats that are not short in decimal
    down = Outcome(ok=False, failure="timeout")
    records = [
        checks.CheckRecord(m.pk, Outcome(ok=True, rtt_ms=rtt[m.pk]), 0.0) if m.pk % 3
        else checks.CheckRecord(m.pk, down, 1.0)
        for m in claimed
    ]
    later = now + timedelta(microseconds=123457)

    assert checks.record_checks("mon", records, now=later) == []

    for machine in Machine.objects.all():
        answered = bool(machine.pk % 3)
        assert machine.last_checked_at == later and machine.claim_token == "" and machine.claimed_until is None
        assert machine.next_check_at == later + timedelta(seconds=60 if answered else 10)
        assert machine.consecutive_failures == (0 if answered else 1)
        assert machine.last_rtt_ms == (rtt[machine.pk] if answered else None)
        assert machine.last_failure_kind == ("" if answered else "timeout")
    results = {r.machine_id: r for r in PingResult.objects.all()}
    assert len(results) == 1000
    for pk, result in results.items():
        assert result.checked_at == later
        assert (result.ok, result.rtt_ms, result.loss) == ((True, rtt[pk], 0.0) if pk % 3 else (False, None, 1.0))


@pytest.mark.django_db
def test_state_results_and_log_entries_commit_together(make_machine, rules, monkeypatch):
    assert checks.record_checks("mon", []) == []
    machine = make_machine(status="active", consecutive_failures=2)
    [claimed] = checks.claim_due("mon", 10, LEASE)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(MachineEvent.objects, "bulk_create", fail)
    with pytest.raises(RuntimeError):
        checks.record_checks("mon", [checks.CheckRecord(claimed.pk, Outcome(ok=False, failure="timeout"))])
    machine.refresh_from_db()
    assert (machine.status, machine.consecutive_failures, machine.claim_token) == ("active", 2, "mon")
    assert not PingResult.objects.exists()


def test_deleting_a_machine_deletes_its_check_history(make_machine):
    machine = make_machine(status="unreachable")
    PingResult.objects.create(machine=machine, ok=False, failure="timeout")
    services.delete_machine(machine.pk, actor="operator")
    assert not PingResult.objects.exists()


def test_the_machine_page_shows_its_recent_checks(operator_client, make_machine):
    machine = make_machine(status="unreachable")
    PingResult.objects.create(machine=machine, ok=False, failure="timeout")
    PingResult.objects.create(machine=machine, ok=True, rtt_ms=1.25)
    html = operator_client.get(f"/machines/{machine.pk}").content.decode()
    assert "Timed out" in html and "1.25 ms" in html
