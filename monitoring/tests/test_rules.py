import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from machines.status import Status
from monitoring.rules import Outcome, Policy, State, after_reregistration, decide

POLICY = Policy(check_interval=60, retry_interval=10, failure_threshold=3, backoff_max=3600)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
OK = Outcome(ok=True, rtt_ms=0.4)
FAIL = Outcome(ok=False, failure="timeout")


def run(outcomes, policy=POLICY, state=None):
    state = state or State()
    now = T0
    decisions = []
    for outcome in outcomes:
        decision = decide(state, outcome, policy, now)
        decisions.append(decision)
        state = decision.state
        now += timedelta(seconds=decision.next_delay)
    return decisions


class TestRules:
    def test_a_first_answer_makes_a_pending_machine_active_without_an_event(self):
        (decision,) = run([OK])
        assert decision.state.status == Status.ACTIVE and decision.event is None and decision.next_delay == 60

    def test_one_or_two_failures_then_success_change_nothing(self):
        decisions = run([OK, FAIL, FAIL, OK])
        assert [d.state.status for d in decisions] == [Status.ACTIVE] * 4
        assert [d.next_delay for d in decisions] == [60, 10, 10, 60]
        assert all(d.event is None for d in decisions)
        assert decisions[-1].state.failures == 0

    def test_the_threshold_turns_it_unreachable_once(self):
        decisions = run([OK, FAIL, FAIL, FAIL, FAIL])
        assert [d.event for d in decisions] == [None, None, None, "unreachable", None]
        assert decisions[3].state.unreachable_since == T0 + timedelta(seconds=80)
        assert decisions[3].state.failures == 3

    def test_unreachable_backs_off_doubling_up_to_the_cap(self):
        decisions = run([FAIL] * 12)
        delays = [d.next_delay for d in decisions]
        assert delays == [10, 10, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]

    def test_recovery_logs_the_outage_and_resets(self):
        decisions = run([OK, FAIL, FAIL, FAIL, FAIL, OK])
        last = decisions[-1]
        assert last.event == "recovered"
        assert last.outage == timedelta(seconds=180)  # unreachable at 80 s, answered at 260 s
        assert last.state == State(status=Status.ACTIVE) and last.next_delay == 60

    def test_a_new_machine_that_never_answers_stays_pending_until_the_threshold(self):
        decisions = run([FAIL, FAIL, FAIL])
        assert [d.state.status for d in decisions] == [Status.PENDING, Status.PENDING, Status.UNREACHABLE]

    def test_reregistration_of_an_unreachable_machine_checks_it_now(self):
        state = run([FAIL] * 8)[-1].state
        assert state.interval == 1920
        new_state, delay = after_reregistration(state, POLICY)
        assert delay == 0 and new_state.interval == 60 and new_state.status == Status.UNREACHABLE
        assert after_reregistration(State(status=Status.ACTIVE), POLICY) == (State(status=Status.ACTIVE), None)

    def test_a_tiny_backoff_cap_is_respected(self):
        policy = Policy(check_interval=60, retry_interval=10, failure_threshold=1, backoff_max=30)
        assert {d.next_delay for d in run([FAIL] * 4, policy)} == {30}


policies = st.builds(
    Policy,
    check_interval=st.integers(1, 600),
    retry_interval=st.integers(1, 120),
    failure_threshold=st.integers(1, 10),
    backoff_max=st.integers(1, 7200),
)


@settings(max_examples=300)
@given(policy=policies, outcomes=st.lists(st.booleans(), max_size=60))
def test_unreachable_exactly_when_threshold_failures_since_last_success(policy, outcomes):
    state = State()
    failures_since_success = 0
    answered_ever = False
    now = T0
    for ok in outcomes:
        decision = decide(state, OK if ok else FAIL, policy, now)
        failures_since_success = 0 if ok else failures_since_success + 1
        answered_ever = answered_ever or ok
        state = decision.state
        assert (state.status == Status.UNREACHABLE) == (failures_since_success >= policy.failure_threshold)
        if state.status != Status.UNREACHABLE:
            assert state.status == (Status.ACTIVE if answered_ever else Status.PENDING)
        low = min(policy.retry_interval, policy.check_interval, policy.backoff_max)
        high = max(policy.retry_interval, policy.check_interval, policy.backoff_max)
        assert low <= decision.next_delay <= high
        if state.status == Status.UNREACHABLE:
            assert decision.next_delay <= policy.backoff_max
        now += timedelta(seconds=decision.next_delay)


@given(policy=policies, outcomes=st.lists(st.booleans(), max_size=60))
def test_events_alternate_and_match_status_changes(policy, outcomes):
    state = State()
    events = []
    for ok in outcomes:
        before = state.status
        decision = decide(state, OK if ok else FAIL, policy, T0)
        state = decision.state
        if decision.event:
            events.append(decision.event)
            assert before != state.status
        else:
            assert before == state.status or before == Status.PENDING
    assert all(a != b for a, b in itertools.pairwise(events))
    assert not events or events[0] == "unreachable"


@given(policy=policies, extra_failures=st.integers(0, 40))
def test_while_unreachable_the_delay_doubles_from_the_check_interval_up_to_the_cap(policy, extra_failures):
    outcomes = [FAIL] * (policy.failure_threshold + extra_failures)
    delays = [d.next_delay for d in run(outcomes, policy)][policy.failure_threshold - 1 :]
    expected = [min(policy.check_interval * 2**k, policy.backoff_max) for k in range(len(delays))]
    assert delays == expected
