"""The liveness rules: state and one check's outcome in, new state and what happened out.

Pure functions only (no clock, socket or database), so every rule is tested directly.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from machines.status import Status


@dataclass(frozen=True)
class Policy:
    check_interval: int = 60
    retry_interval: int = 10
    failure_threshold: int = 3
    backoff_max: int = 3600


@dataclass(frozen=True)
class State:
    status: str = Status.PENDING
    failures: int = 0
    # While unreachable: the current backoff interval in seconds; otherwise None.
    interval: int | None = None
    unreachable_since: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    rtt_ms: float | None = None
    failure: str = ""


@dataclass(frozen=True)
class Decision:
    state: State
    next_delay: int
    event: str | None = None  # "unreachable" or "recovered"
    outage: timedelta | None = None


def decide(state: State, outcome: Outcome, policy: Policy, now: datetime) -> Decision:
    if outcome.ok:
        recovered = state.status == Status.UNREACHABLE
        outage = now - state.unreachable_since if recovered and state.unreachable_since else None
        return Decision(
            State(status=Status.ACTIVE),
            policy.check_interval,
            event="recovered" if recovered else None,
            outage=outage,
        )
    failures = state.failures + 1
    if state.status == Status.UNREACHABLE:
        interval = min((state.interval or policy.check_interval) * 2, policy.backoff_max)
        return Decision(replace(state, failures=failures, interval=interval), interval)
    if failures >= policy.failure_threshold:
        interval = min(policy.check_interval, policy.backoff_max)
        return Decision(
            State(status=Status.UNREACHABLE, failures=failures, interval=interval, unreachable_since=now),
            interval,
            event="unreachable",
        )
    return Decision(replace(state, failures=failures), policy.retry_interval)


def after_reregistration(state: State, policy: Policy) -> tuple[State, int | None]:
    """An unreachable host that registers again has probably rebooted: drop the backoff, check it now.

    Returns the new state and the delay until the next check, or None to keep the current schedule.
    """
    if state.status == Status.UNREACHABLE:
        return replace(state, interval=min(policy.check_interval, policy.backoff_max)), 0
    return state, None
