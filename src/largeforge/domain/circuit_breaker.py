"""A per-replica circuit breaker: closed, open for an exponential backoff, then half-open probes.

Outcomes are recorded with `record_success` / `record_failure`. A failure with an HTTP status
trips the breaker only when the replica itself is in trouble: no answer at all (`status=None`:
connection error, timeout), a 5xx, 408 (request timeout) or 429 (too many requests). Any other
status (a 4xx such as 400, 404 or 422) means the replica answered; it counts as a success.

The breaker opens on `failure_threshold` consecutive failures, or once the last `window` outcomes
hold at least `min_calls` entries with a failure rate of at least `failure_rate`. It stays open
for a backoff period (at least any `Retry-After` the replica sent), then turns half-open lazily
the next time it is looked at; half-open it admits `half_open_probes` concurrent probes. A probe
success closes it; a probe failure re-opens it with the backoff multiplied, up to `max_backoff_s`.

Thread-safe: every method takes one lock. `on_change` callbacks run after the lock is released,
in the order the transitions happened.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "counts_as_failure",
]

#: 4xx statuses that still mean the replica is unwell (request timeout, too many requests).
_TRIPPING_CLIENT_STATUSES = frozenset({408, 429})


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"  # requests flow
    OPEN = "open"  # requests are refused until the backoff elapses
    HALF_OPEN = "half_open"  # a few probe requests decide whether to close or re-open


def counts_as_failure(status: int | None) -> bool:
    """Whether a failed attempt with this HTTP status (None: no answer) should trip a breaker."""
    return status is None or status >= 500 or status in _TRIPPING_CLIENT_STATUSES


def _check(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"BreakerPolicy.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    failure_threshold: int = 3  # consecutive failures that open it
    failure_rate: float = 0.5  # or: this failure rate over the window ...
    window: int = 20  # ... of the last `window` outcomes (count-based) ...
    min_calls: int = 10  # ... once at least `min_calls` outcomes are in the window
    base_backoff_s: float = 1.0  # first open period
    max_backoff_s: float = 30.0  # cap on the backoff (a longer Retry-After is still honoured)
    multiplier: float = 2.0  # each re-open after a failed probe multiplies the period
    half_open_probes: int = 1  # concurrent probes admitted while half-open

    def __post_init__(self) -> None:
        _check(self.failure_threshold >= 1, "failure_threshold", ">= 1", self.failure_threshold)
        _check(0.0 < self.failure_rate <= 1.0, "failure_rate", "in (0, 1]", self.failure_rate)
        _check(self.window >= 1, "window", ">= 1", self.window)
        _check(1 <= self.min_calls <= self.window, "min_calls", "in [1, window]", self.min_calls)
        _check(
            math.isfinite(self.base_backoff_s) and self.base_backoff_s > 0,
            "base_backoff_s",
            "a positive number",
            self.base_backoff_s,
        )
        _check(
            math.isfinite(self.max_backoff_s) and self.max_backoff_s >= self.base_backoff_s,
            "max_backoff_s",
            ">= base_backoff_s",
            self.max_backoff_s,
        )
        _check(
            math.isfinite(self.multiplier) and self.multiplier >= 1.0,
            "multiplier",
            ">= 1",
            self.multiplier,
        )
        _check(self.half_open_probes >= 1, "half_open_probes", ">= 1", self.half_open_probes)


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent read of a breaker, for metrics and health endpoints."""

    state: BreakerState
    consecutive_failures: int
    failure_rate: float  # failures / outcomes over the window (0.0 when empty)
    retry_in: float  # seconds until it half-opens (0.0 unless open)
    opened_count: int  # times it has opened (re-opens included)


class CircuitBreaker:
    """Closed/open/half-open breaker guarding one replica. See the module docstring."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._policy = policy if policy is not None else BreakerPolicy()
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._backoff = self._policy.base_backoff_s  # period of the next re-open after a probe
        self._reopen_at = 0.0  # when an open breaker turns half-open
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=self._policy.window)  # True: a failure
        self._probes = 0  # probe slots taken while half-open
        self._opened_count = 0
        self._pending: list[tuple[BreakerState, BreakerState]] = []
        self._delivering = False

    @property
    def policy(self) -> BreakerPolicy:
        """The policy this breaker applies."""
        return self._policy

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose backoff has elapsed reads as half-open."""
        with self._lock:
            self._refresh(self._clock())
            state = self._state
        self._notify()
        return state

    def available(self) -> bool:
        """Whether `acquire` would admit a request now (takes no probe slot)."""
        with self._lock:
            self._refresh(self._clock())
            ok = self._admits()
        self._notify()
        return ok

    def acquire(self) -> bool:
        """Admit a request: always when closed, never when open, one probe slot when half-open.

        Every admitted request must end in `record_success`, `record_failure` or `release`.
        """
        with self._lock:
            self._refresh(self._clock())
            ok = self._admits()
            if ok and self._state is BreakerState.HALF_OPEN:
                self._probes += 1
        self._notify()
        return ok

    def release(self) -> None:
        """Give back an admitted request's slot without an outcome (it was cancelled)."""
        with self._lock:
            self._refresh(self._clock())
            if self._state is BreakerState.HALF_OPEN:
                self._probes = max(0, self._probes - 1)
        self._notify()

    def record_success(self) -> None:
        """The replica answered. Half-open, this closes the breaker and resets the backoff."""
        with self._lock:
            self._refresh(self._clock())
            self._success()
        self._notify()

    def record_failure(self, status: int | None = None, retry_after: float | None = None) -> None:
        """A request failed. `status` is its HTTP status (None: no answer, timeout, reset).

        A status that does not trip the breaker (see `counts_as_failure`) counts as a success.
        `retry_after` (seconds, from a Retry-After header) makes the open period at least that
        long if this failure opens the breaker, or extends it if the breaker is already open.
        """
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if counts_as_failure(status):
                self._failure(now, _sane_retry_after(retry_after))
            else:
                self._success()
        self._notify()

    def retry_in(self) -> float:
        """Seconds until an open breaker turns half-open (0.0 when not open)."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            wait = self._retry_in(now)
        self._notify()
        return wait

    def snapshot(self) -> BreakerSnapshot:
        """State, failure counts and timing read together under the lock."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            outcomes = len(self._outcomes)
            snap = BreakerSnapshot(
                state=self._state,
                consecutive_failures=self._consecutive,
                failure_rate=sum(self._outcomes) / outcomes if outcomes else 0.0,
                retry_in=self._retry_in(now),
                opened_count=self._opened_count,
            )
        self._notify()
        return snap

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self._state.value}, policy={self._policy!r})"

    # -- internals: called with the lock held ------------------------------------------------

    def _refresh(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._reopen_at:
            self._probes = 0
            self._move(BreakerState.HALF_OPEN)

    def _admits(self) -> bool:
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN:
            return self._probes < self._policy.half_open_probes
        return False

    def _retry_in(self, now: float) -> float:
        return max(0.0, self._reopen_at - now) if self._state is BreakerState.OPEN else 0.0

    def _success(self) -> None:
        self._consecutive = 0
        self._outcomes.append(False)
        if self._state is BreakerState.HALF_OPEN:
            self._outcomes.clear()
            self._probes = 0
            self._backoff = self._policy.base_backoff_s
            self._move(BreakerState.CLOSED)

    def _failure(self, now: float, retry_after: float) -> None:
        policy = self._policy
        self._consecutive += 1
        self._outcomes.append(True)
        if self._state is BreakerState.OPEN:  # a late outcome of a request admitted earlier
            self._reopen_at = max(self._reopen_at, now + retry_after)
        elif self._state is BreakerState.HALF_OPEN:
            self._backoff = min(self._backoff * policy.multiplier, policy.max_backoff_s)
            self._open(now, retry_after)
        elif self._consecutive >= policy.failure_threshold or (
            len(self._outcomes) >= policy.min_calls
            and sum(self._outcomes) >= policy.failure_rate * len(self._outcomes)
        ):
            self._backoff = policy.base_backoff_s
            self._open(now, retry_after)

    def _open(self, now: float, retry_after: float) -> None:
        self._reopen_at = now + max(self._backoff, retry_after)
        self._probes = 0
        self._opened_count += 1
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_change is not None and old is not new:
            self._pending.append((old, new))

    # -- callbacks: called without the lock ---------------------------------------------------

    def _notify(self) -> None:
        """Deliver pending transitions in order; one thread delivers at a time, re-entry is safe."""
        callback = self._on_change
        if callback is None:
            return
        while True:
            with self._lock:
                if self._delivering or not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._delivering = True
            delivered = 0
            try:
                for old, new in batch:
                    delivered += 1
                    callback(old, new)
            finally:
                with self._lock:
                    self._delivering = False
                    if delivered < len(batch):  # the callback raised: keep the rest, in order
                        self._pending[:0] = batch[delivered:]


def _sane_retry_after(retry_after: float | None) -> float:
    """A usable Retry-After in seconds: missing, negative, NaN or infinite values count as 0."""
    if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
        return 0.0
    return float(retry_after)
