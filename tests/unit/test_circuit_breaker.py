"""The circuit breaker: opening rules, backoff, half-open probes, transitions, thread safety."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from largeforge.domain.circuit_breaker import (
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    counts_as_failure,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
STATUSES = [None, 500, 502, 503, 408, 429, 400, 404, 422]
CLIENT_ERRORS = {400, 404, 422}


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def make(
    clock: FakeClock | None = None, **policy: Any
) -> tuple[CircuitBreaker, FakeClock, list[tuple[BreakerState, BreakerState]]]:
    clock = clock or FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerPolicy(**policy),
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, clock, changes


# -- examples -----------------------------------------------------------------------------------


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker, _, _ = make(failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure(503)
    assert breaker.state is CLOSED
    assert breaker.acquire()
    breaker.record_failure(None)
    assert breaker.state is OPEN
    assert not breaker.available()
    assert not breaker.acquire()
    assert breaker.snapshot().opened_count == 1


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _, _ = make(failure_threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.snapshot().consecutive_failures == 1


def test_half_opens_after_the_backoff_and_admits_the_probes() -> None:
    breaker, clock, _ = make(failure_threshold=1, base_backoff_s=2.0, half_open_probes=2)
    breaker.record_failure()
    assert breaker.retry_in() == pytest.approx(2.0)
    clock.advance(1.999)
    assert breaker.state is OPEN
    assert not breaker.acquire()
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_in() == 0.0
    assert breaker.available()
    assert breaker.acquire()
    assert breaker.acquire()
    assert not breaker.available()
    assert not breaker.acquire()
    breaker.release()  # a cancelled probe gives its slot back
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.snapshot() == BreakerSnapshot(CLOSED, 0, 0.0, 0.0, 1)


def test_backoff_multiplies_on_failed_probes_up_to_the_cap_then_resets() -> None:
    breaker, clock, _ = make(failure_threshold=1, base_backoff_s=1.0, max_backoff_s=5.0)
    breaker.record_failure()
    periods = []
    for _ in range(5):
        periods.append(breaker.retry_in())
        clock.advance(breaker.retry_in())
        assert breaker.acquire()
        breaker.record_failure(502)
    assert periods == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.advance(breaker.retry_in())
    assert breaker.acquire()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.retry_in() == 1.0  # back to the base period


def test_retry_after_is_honoured_even_beyond_the_cap() -> None:
    breaker, clock, _ = make(failure_threshold=1, base_backoff_s=1.0, max_backoff_s=5.0)
    breaker.record_failure(429, retry_after=60.0)
    assert breaker.retry_in() == 60.0
    clock.advance(59.0)
    assert not breaker.acquire()
    clock.advance(1.0)
    assert breaker.acquire()
    breaker.record_failure(503, retry_after=1.5)  # under the doubled backoff: the backoff wins
    assert breaker.retry_in() == 2.0


def test_a_late_failure_with_retry_after_extends_an_open_period() -> None:
    breaker, clock, _ = make(failure_threshold=1, base_backoff_s=1.0)
    breaker.record_failure()
    breaker.record_failure(503, retry_after=10.0)
    assert breaker.state is OPEN
    assert breaker.retry_in() == 10.0
    breaker.record_failure(503, retry_after=float("nan"))  # ignored, not an error
    assert breaker.retry_in() == 10.0
    clock.advance(10.0)
    assert breaker.state is HALF_OPEN


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_client_errors_count_as_successes(status: int) -> None:
    breaker, _, _ = make(failure_threshold=2)
    breaker.record_failure()
    breaker.record_failure(status)
    breaker.record_failure()
    assert breaker.state is CLOSED
    assert not counts_as_failure(status)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_server_errors_trip(status: int | None) -> None:
    breaker, _, _ = make(failure_threshold=1)
    breaker.record_failure(status)
    assert breaker.state is OPEN
    assert counts_as_failure(status)


def test_a_client_error_on_a_probe_closes_the_breaker() -> None:
    breaker, clock, _ = make(failure_threshold=1)
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.acquire()
    breaker.record_failure(404)  # the replica answered
    assert breaker.state is CLOSED


def test_opens_on_the_failure_rate_once_the_window_has_min_calls() -> None:
    breaker, _, _ = make(failure_threshold=100, window=6, min_calls=4, failure_rate=0.5)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state is CLOSED  # 2/3 failed, but fewer than min_calls outcomes
    assert breaker.snapshot().failure_rate == pytest.approx(2 / 3)
    breaker.record_success()
    assert breaker.state is CLOSED  # a success never opens it (2/4)
    breaker.record_failure()
    assert breaker.state is OPEN  # 3/5 >= failure_rate


def test_the_rate_window_slides() -> None:
    breaker, _, _ = make(failure_threshold=100, window=4, min_calls=4, failure_rate=0.75)
    for _ in range(3):
        breaker.record_failure()
        breaker.record_success()
    # the window now holds S F S F ... never 3 failures out of the last 4
    assert breaker.state is CLOSED
    assert breaker.snapshot().failure_rate == 0.5


def test_on_change_sees_every_transition_in_order() -> None:
    breaker, clock, changes = make(failure_threshold=2)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(1.0)
    assert breaker.available()  # the lazy open -> half_open transition is reported too
    assert breaker.acquire()
    breaker.record_success()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_on_change_may_call_back_into_the_breaker() -> None:
    clock = FakeClock()
    seen: list[BreakerSnapshot] = []
    breaker: CircuitBreaker

    def observe(old: BreakerState, new: BreakerState) -> None:
        seen.append(breaker.snapshot())  # would deadlock if called under the lock

    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), clock=clock, on_change=observe)
    breaker.record_failure()
    assert [s.state for s in seen] == [OPEN]


def test_a_raising_callback_loses_no_later_transition() -> None:
    clock = FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []

    def flaky(old: BreakerState, new: BreakerState) -> None:
        changes.append((old, new))
        if new is OPEN and len(changes) == 1:
            raise RuntimeError("boom")

    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), clock=clock, on_change=flaky)
    with pytest.raises(RuntimeError):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_rate", 0.0),
        ("failure_rate", 1.5),
        ("window", 0),
        ("min_calls", 0),
        ("min_calls", 21),
        ("base_backoff_s", 0.0),
        ("base_backoff_s", float("inf")),
        ("max_backoff_s", 0.5),
        ("multiplier", 0.5),
        ("half_open_probes", 0),
    ],
)
def test_policy_validation_names_the_field(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=field):
        BreakerPolicy(**kwargs)


def test_half_open_admits_exactly_the_probe_slots_across_threads() -> None:
    breaker, clock, _ = make(failure_threshold=1, half_open_probes=3)
    breaker.record_failure()
    clock.advance(1.0)
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(breaker.acquire())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 3


# -- stateful model -----------------------------------------------------------------------------

policies = st.builds(
    lambda threshold, window, min_frac, rate, base, cap, mult, probes: BreakerPolicy(
        failure_threshold=threshold,
        window=window,
        min_calls=max(1, round(window * min_frac)),
        failure_rate=rate,
        base_backoff_s=base,
        max_backoff_s=base * cap,
        multiplier=mult,
        half_open_probes=probes,
    ),
    threshold=st.integers(1, 5),
    window=st.integers(1, 8),
    min_frac=st.sampled_from([0.25, 0.5, 1.0]),
    rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    base=st.sampled_from([0.5, 1.0, 2.0]),
    cap=st.sampled_from([1.0, 2.0, 5.0, 16.0]),
    mult=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    probes=st.integers(1, 3),
)


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker and a small reference model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.changes: list[tuple[BreakerState, BreakerState]] = []
        self.policy = BreakerPolicy()
        self.breaker = CircuitBreaker(self.policy, clock=self.clock)
        # the model
        self.state = CLOSED
        self.reopen_at = 0.0
        self.backoff = 0.0
        self.consecutive = 0
        self.outcomes: deque[bool] = deque()
        self.probes = 0
        self.opened = 0
        self.open_bound = 0.0  # the longest this opening may last: max(cap, its Retry-After)
        self.model_changes: list[tuple[BreakerState, BreakerState]] = []

    @initialize(policy=policies)
    def setup(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.backoff = policy.base_backoff_s
        self.outcomes = deque(maxlen=policy.window)
        self.breaker = CircuitBreaker(
            policy, clock=self.clock, on_change=lambda a, b: self.changes.append((a, b))
        )

    # -- model helpers --

    def move(self, new: BreakerState) -> None:
        self.model_changes.append((self.state, new))
        self.state = new

    def refresh(self) -> None:
        if self.state is OPEN and self.clock.now >= self.reopen_at:
            self.probes = 0
            self.move(HALF_OPEN)

    def open(self, retry_after: float) -> None:
        self.reopen_at = self.clock.now + max(self.backoff, retry_after)
        self.open_bound = max(self.policy.max_backoff_s, retry_after)
        self.probes = 0
        self.opened += 1
        self.move(OPEN)

    def model_success(self) -> None:
        self.consecutive = 0
        self.outcomes.append(False)
        if self.state is HALF_OPEN:
            self.outcomes.clear()
            self.probes = 0
            self.backoff = self.policy.base_backoff_s
            self.move(CLOSED)

    def model_failure(self, retry_after: float) -> None:
        p = self.policy
        self.consecutive += 1
        self.outcomes.append(True)
        if self.state is OPEN:
            self.reopen_at = max(self.reopen_at, self.clock.now + retry_after)
            self.open_bound = max(self.open_bound, retry_after)
        elif self.state is HALF_OPEN:
            self.backoff = min(self.backoff * p.multiplier, p.max_backoff_s)
            self.open(retry_after)
        elif self.consecutive >= p.failure_threshold or (
            len(self.outcomes) >= p.min_calls
            and sum(self.outcomes) >= p.failure_rate * len(self.outcomes)
        ):
            self.backoff = p.base_backoff_s
            self.open(retry_after)

    def fail(self, status: int | None, retry_after: float | None) -> None:
        self.refresh()
        before, consecutive_before = self.state, self.consecutive
        self.breaker.record_failure(status, retry_after)
        if counts_as_failure(status):
            self.model_failure(retry_after or 0.0)
        else:
            self.model_success()
        after = self.breaker.state
        if before is CLOSED and status in CLIENT_ERRORS:
            assert after is CLOSED
        # the threshold opens it exactly when reached (the model checks it is not earlier,
        # unless the failure rate opened it)
        threshold_reached = consecutive_before + 1 == self.policy.failure_threshold
        if before is CLOSED and counts_as_failure(status) and threshold_reached:
            assert after is OPEN
        if before is HALF_OPEN:
            assert after is (OPEN if counts_as_failure(status) else CLOSED)

    # -- rules --

    @rule()
    def success(self) -> None:
        self.refresh()
        before = self.state
        self.breaker.record_success()
        self.model_success()
        if before is HALF_OPEN:
            assert self.breaker.state is CLOSED

    @rule(status=st.sampled_from(STATUSES))
    def failure(self, status: int | None) -> None:
        self.fail(status, None)

    @rule(
        status=st.sampled_from([None, 429, 503]),
        retry_after=st.floats(0.0, 120.0, allow_nan=False),
    )
    def failure_with_retry_after(self, status: int | None, retry_after: float) -> None:
        self.fail(status, retry_after)

    @rule(seconds=st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(0.0, 40.0)))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def advance_to_reopen(self) -> None:
        if self.state is OPEN:
            self.clock.now = max(self.clock.now, self.reopen_at)

    @rule()
    def acquire(self) -> None:
        self.refresh()
        admitted = self.breaker.acquire()
        if self.state is OPEN:
            assert not admitted, "an open breaker admitted a request before its backoff elapsed"
        elif self.state is CLOSED:
            assert admitted
        else:
            assert admitted == (self.probes < self.policy.half_open_probes)
            self.probes += admitted

    @precondition(lambda self: self.probes > 0)
    @rule()
    def release(self) -> None:
        self.refresh()
        self.breaker.release()
        if self.state is HALF_OPEN:
            self.probes = max(0, self.probes - 1)

    # -- invariants --

    @invariant()
    def matches_the_model(self) -> None:
        self.refresh()
        snap = self.breaker.snapshot()
        assert snap.state is self.state
        assert snap.consecutive_failures == self.consecutive
        assert snap.opened_count == self.opened
        expected_rate = sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0
        assert snap.failure_rate == pytest.approx(expected_rate)
        expected_wait = max(0.0, self.reopen_at - self.clock.now) if self.state is OPEN else 0.0
        assert snap.retry_in == pytest.approx(expected_wait)
        assert self.breaker.available() == (
            self.state is CLOSED
            or (self.state is HALF_OPEN and self.probes < self.policy.half_open_probes)
        )

    @invariant()
    def backoff_is_bounded(self) -> None:
        assert self.breaker.retry_in() <= self.open_bound + 1e-9
        assert self.backoff <= self.policy.max_backoff_s

    @invariant()
    def probes_are_bounded(self) -> None:
        assert self.probes <= self.policy.half_open_probes

    @invariant()
    def transitions_are_reported_in_order(self) -> None:
        self.refresh()
        self.breaker.state  # noqa: B018 - reading the state may report the lazy transition
        assert self.changes == self.model_changes
        for (_, new), (old, _) in zip(self.changes, self.changes[1:], strict=False):
            assert new is old


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerMachine = BreakerMachine.TestCase
