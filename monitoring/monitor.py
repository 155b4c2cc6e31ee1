"""The monitor loop: claim what is due, ping it in one batch, record the results, tell the dashboards.

It runs on an asyncio loop of its own (`manage.py monitor`) or beside Daphne on Daphne's loop (`manage.py
serve`, the embedded default). Database work happens on one dedicated thread so it never blocks the loop.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from machines.models import Machine, MachineEvent
from machines.validation import address_refusal

from . import broadcast, checks, cutoffs, history, uptime
from .icmp import Pinger, PingerUnavailable
from .isolation import Isolation, Probe, segment_of
from .metrics import CheckCounters
from .models import MonitorHeartbeat
from .rules import Outcome
from .scope import Scope

logger = logging.getLogger("vxlanmgr.monitor")

TICK = 0.5
HEARTBEAT_EVERY = 10.0
SUMMARY_EVERY = 60.0
# History work (folds, pruning) runs in short steps between checks; when it is caught up it looks again
# after this long.
HISTORY_IDLE = 60.0
DB_BACKOFF_MAX = 30.0
STOP_GRACE = 4.0
# A batch ends at its last send plus the timeout; the margin covers sending and writing a full batch,
# and bounds how long a killed monitor's machines wait before another monitor checks them.
LEASE_MARGIN = 10


class Monitor:
    def __init__(self, pinger_factory: Callable[[], Pinger] = Pinger, name: str | None = None,
                 scope: Scope | None = None):
        self.pinger_factory = pinger_factory
        self.pinger: Pinger | None = None
        self.host = socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}"
        self.scope = scope if scope is not None else Scope.parse(settings.MONITOR_SCOPE)
        self.isolation = Isolation()
        self.last_round_at = None
        self.token = uuid.uuid4().hex
        self.shutdown = asyncio.Event()
        self.db_executor = ThreadPoolExecutor(1, thread_name_prefix="monitor-db")
        self.batches: set[asyncio.Task] = set()
        self.in_flight = 0
        # Set when a batch finishes: a monitor with no free capacity claims again at once, not a tick later.
        self.freed = asyncio.Event()
        # The last claim took fewer machines than it could: every due machine is in flight.
        self.drained = False
        self.db_down_since: float | None = None
        self.stats = {"checks": 0, "changes": 0, "lag": 0.0}
        # For /metrics, which reads them from the heartbeat.
        self.counters = CheckCounters()
        self.mode = ""
        self.error = ""

    # -- database access, always on the dedicated thread --------------------------------------------------

    async def db(self, fn, *args, **kwargs):
        def call():
            close_old_connections()
            return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.db_executor, call)

    def _db_failed(self, exc: Exception) -> None:
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            logger.error("database unavailable, retrying with backoff (no machine is judged meanwhile): %s", exc)

    def _db_ok(self) -> None:
        if self.db_down_since is not None:
            logger.warning("database reachable again after %.0f s", time.monotonic() - self.db_down_since)
            self.db_down_since = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start_pinger(self) -> None:
        """Open the ICMP sockets; raises PingerUnavailable with a one-line fix when that is not allowed."""
        self.pinger = self.pinger_factory()
        self.mode = getattr(self.pinger, "mode", "")

    async def run(self, keep_reporting: bool = False) -> None:
        """Check machines until stopped. Without ICMP, raise PingerUnavailable, or with keep_reporting
        stay up and keep saying why in the heartbeat, so the dashboard can show it."""
        if self.pinger is None:
            try:
                self.start_pinger()
            except PingerUnavailable as exc:
                self.error = str(exc)
                logger.error("cannot send pings: %s", exc)
                if not keep_reporting:
                    await self._beat_safely()
                    raise
                while not self.shutdown.is_set():
                    await self._beat_safely()
                    await self._sleep(HEARTBEAT_EVERY)
                return
        logger.info("monitor %s started (%s ICMP sockets), checking %s", self.name, self.mode or "default",
                    self.scope.describe())
        housekeeping = asyncio.create_task(self._housekeeping())
        keep_history = asyncio.create_task(self._history())
        backoff = 1.0
        try:
            while not self.shutdown.is_set():
                try:
                    did_work = await self.step()
                    self._db_ok()
                    backoff = 1.0
                except DatabaseError as exc:
                    self._db_failed(exc)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, DB_BACKOFF_MAX)
                    continue
                if not did_work or self.drained:
                    await self._idle()
        finally:
            await self._drain()
            housekeeping.cancel()
            keep_history.cancel()
            await asyncio.gather(housekeeping, keep_history, return_exceptions=True)
            if self.pinger:
                self.pinger.close()
            self.db_executor.shutdown(wait=False)
            logger.info("monitor %s stopped", self.name)

    def stop(self) -> None:
        self.shutdown.set()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.shutdown.wait(), seconds)
        except TimeoutError:
            pass

    async def _idle(self) -> None:
        """Wait for the next tick, or less when checks are waiting for capacity and a batch frees some.

        Claiming again at once after a claim that took every due machine would send a stream of tiny batches
        (a 100,000-machine fleet fell due ~20 at a time): one claim per tick keeps batches large and the
        database thread free, at the cost of at most a tick of due lag."""
        if self.in_flight < settings.PING_CONCURRENCY:
            await self._sleep(TICK)
            return
        self.freed.clear()
        waiters = [asyncio.ensure_future(self.shutdown.wait()), asyncio.ensure_future(self.freed.wait())]
        try:
            await asyncio.wait(waiters, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self) -> None:
        """Let batches already sent finish and write their results, within the stop grace."""
        if self.batches:
            await asyncio.wait(self.batches, timeout=STOP_GRACE)
        for task in self.batches:
            task.cancel()

    # -- one unit of work ---------------------------------------------------------------------------------

    async def step(self) -> bool:
        """Claim the machines now due and send them out as one batch; True if there was anything to do."""
        capacity = settings.PING_CONCURRENCY - self.in_flight
        self.drained = False
        if capacity <= 0:
            return False
        lease = timedelta(seconds=settings.PING_COUNT * settings.PING_TIMEOUT + LEASE_MARGIN)
        now = timezone.now()
        machines = await self.db(checks.claim_due, self.token, capacity, lease, now, self.scope)
        self.drained = len(machines) < capacity
        if not machines:
            self.counters.caught_up()
            return False
        # An address the policy refuses (VXLANMGR_ALLOWED_PREFIXES changed since it registered) is never
        # pinged: it keeps its status and comes up again an interval later; its page says why.
        refused = {machine.pk for machine in machines if address_refusal(machine.ip_address)}
        if refused:
            await self.db(checks.postpone, self.token, list(refused), now)
            machines = [machine for machine in machines if machine.pk not in refused]
            if not machines:
                return True
        lag = (now - min(m.next_check_at for m in machines)).total_seconds()
        self.stats["lag"] = max(self.stats["lag"], lag)
        self.counters.claimed(lag)
        self.in_flight += len(machines)
        task = asyncio.create_task(self.check(machines))
        self.batches.add(task)
        task.add_done_callback(self.batches.discard)
        return True

    async def check(self, machines: list[Machine]) -> None:
        """Ping one claimed batch and record it. Dead hosts only hold up their own batch."""
        # A round is one batch: its lines carry its id, and those about one machine its id and address too.
        round_id = uuid.uuid4().hex[:12]
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug("round %s: pinging %d machines", round_id, len(machines),
                         extra={"round": round_id, "machine_ids": [machine.pk for machine in machines]})
        try:
            results = await self.pinger.ping_batch(
                [machine.ip_address for machine in machines], settings.PING_COUNT, settings.PING_TIMEOUT
            )
            held = await self._own_path(machines, results)
            if held:
                await self.db(cutoffs.hold, self.token, sorted(held), timezone.now())
            records = []
            for machine in machines:
                if machine.pk in held:
                    continue
                result = results[machine.ip_address]
                outcome = Outcome(ok=result.ok, rtt_ms=result.rtt_ms, failure=result.failure or "")
                records.append(checks.CheckRecord(machine.pk, outcome, result.loss))
                if debug:
                    logger.debug(
                        "round %s: machine %d %s: %s", round_id, machine.pk, machine.ip_address,
                        result.failure or f"answered in {result.rtt_ms} ms",
                        extra=_about(round_id, machine) | {"ok": result.ok, "rtt_ms": result.rtt_ms,
                                                           "failure": result.failure or None, "loss": result.loss},
                    )
            try:
                changes = await self.db(checks.record_checks, self.token, records)
            except DatabaseError as exc:
                # Nothing was written: the claims lapse and these machines are checked again later.
                self._db_failed(exc)
                return
            self.last_round_at = timezone.now()
            self.stats["checks"] += len(records)
            self.stats["changes"] += len(changes)
            for record in records:
                self.counters.observe(record.outcome)
            for change in changes:
                machine = change.machine
                logger.info(
                    "%s %s (%s): %s -> %s (machine %d, round %s)", machine.hostname, machine.ip_address,
                    change.decision.event or "status", change.previous, change.decision.state.status, machine.pk,
                    round_id, extra=_about(round_id, machine) | {"status": change.decision.state.status},
                )
            if changes:
                await broadcast.push(change_event(changes))
        except Exception:
            logger.exception("round %s: a check batch of %d machines failed", round_id, len(machines),
                             extra={"round": round_id, "machine_ids": [machine.pk for machine in machines]})
        finally:
            self.in_flight -= len(machines)
            self.freed.set()

    # -- the monitor's own path -------------------------------------------------------------------------

    async def _own_path(self, machines: list[Machine], results: dict) -> set[int]:
        """Judge, segment by segment, whether this round's failures are the monitor's own (monitoring/isolation.py);
        record a cut-off or a rejoin; return the machines whose failures must not count."""
        segments: dict[str, list[tuple[int, Probe]]] = defaultdict(list)
        for machine in machines:
            result = results[machine.ip_address]
            answered_last_time = machine.last_checked_at is not None and machine.last_seen_at == machine.last_checked_at
            segments[segment_of(machine.vni)].append(
                (machine.pk, Probe(machine.vni, machine.ip_address, result.ok, result.failure, result.detail or "",
                                   answered_last_time))
            )
        held: set[int] = set()
        now = timezone.now()
        for segment, members in segments.items():
            verdict = await self.isolation.judge(segment, [probe for _pk, probe in members], now, self._canary_answers)
            if verdict.held:
                held.update(pk for pk, probe in members if not probe.ok)
            if verdict.isolated:
                logger.warning("monitor %s is cut off from %s: %s; failures there do not count until it answers",
                               self.name, segment, verdict.isolated)
                await self._record_path(MachineEvent.Kind.MONITOR_ISOLATED, segment, verdict.isolated, now)
            elif verdict.rejoined_after is not None:
                detail = f"reachable again after {cutoffs.duration(verdict.rejoined_after)}"
                logger.warning("monitor %s reaches %s again after %s", self.name, segment,
                               cutoffs.duration(verdict.rejoined_after))
                await self._record_path(MachineEvent.Kind.MONITOR_REJOINED, segment, detail, now)
        return held

    async def _record_path(self, kind: str, segment: str, detail: str, now) -> None:
        try:
            await self.db(cutoffs.record, kind, self.name, segment, detail, self.isolation.snapshot(), now)
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        # The banner is part of the list: have every dashboard fetch it again.
        await broadcast.push(broadcast.event(created=True))

    async def _canary_answers(self, address: str) -> bool:
        results = await self.pinger.ping_batch([address], settings.PING_COUNT, settings.PING_TIMEOUT)
        return results[address].ok

    # -- periodic chores ----------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_summary = time.monotonic()
        last_checks = 0
        while True:
            await self._beat_safely()
            now = time.monotonic()
            if now - last_summary >= SUMMARY_EVERY:
                await self._summary(now - last_summary, self.stats["checks"] - last_checks)
                last_summary, last_checks = now, self.stats["checks"]
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _history(self) -> None:
        """Fold raw results into hours and days and prune past retention, one short step at a time, so
        checks queued on the database thread wait at most one step."""
        folder = history.Folder()
        while not self.shutdown.is_set():
            try:
                done = await self.db(folder.step)
                if done and done.startswith("folded hour"):
                    logger.info("history: %s", done)
                    after = 0
                    while (after := await self.db(uptime.refresh_uptime_30d, after)) is not None:
                        await asyncio.sleep(0)
            except DatabaseError as exc:
                self._db_failed(exc)
                done = None
            except Exception:
                logger.exception("history: a fold or prune step failed; retrying later")
                done = None
            await self._sleep(0.01 if done else HISTORY_IDLE)

    async def _summary(self, elapsed: float, checks: int) -> None:
        try:
            count = await self.db(Machine.objects.count)
        except DatabaseError:
            count = "?"
        logger.info(
            "summary: %s machines, %.1f checks/s, %d status changes, max due lag %.2f s, %d in flight",
            count, checks / elapsed if elapsed else 0.0, self.stats["changes"], self.stats["lag"], self.in_flight,
        )
        self.stats["lag"] = 0.0

    async def _beat_safely(self) -> None:
        try:
            await self.db(_beat, self.name, {
                "host": self.host, "scope": str(self.scope), "mode": self.mode, "error": self.error,
                "counters": self.counters.snapshot(), "last_round_at": self.last_round_at,
                "isolation": self.isolation.snapshot(),
            })
        except DatabaseError as exc:
            self._db_failed(exc)


def _about(round_id: str, machine: Machine) -> dict:
    """The fields of a log line about one machine in one round."""
    return {"round": round_id, "machine_id": machine.pk, "machine_ip": machine.ip_address}


def change_event(changes: list[checks.StatusChange]) -> dict:
    """The push for a batch's status changes."""
    return broadcast.event(
        changed=[change.machine.pk for change in changes],
        announce={change.machine.pk: change.decision.state.status for change in changes},
    )


def use_one_persistent_connection() -> None:
    """For a process that is only a monitor: all its queries come from one thread, so one kept connection
    serves best; a pool adds nothing and would hide an outage behind its wait for a free connection."""
    for alias in connections:
        settings_dict = connections.settings[alias]
        settings_dict["OPTIONS"].pop("pool", None)
        settings_dict["CONN_MAX_AGE"] = 600


def _beat(name: str, fields: dict) -> None:
    now = timezone.now()
    MonitorHeartbeat.objects.update_or_create(name=name, defaults={"last_beat_at": now, **fields})
    MonitorHeartbeat.objects.filter(last_beat_at__lt=now - timedelta(days=1)).delete()
