"""Choosing a replica of an expert: runtime replica state, balancing strategies, admission.

`choose_replica` filters the eligible replicas (not draining, healthy, breaker available, not
excluded), asks a `BalancingStrategy` to pick one, and admits it through its circuit breaker.
The caller then brackets the request with `Replica.start` / `Replica.finish` and reports the
outcome to `replica.breaker` (`record_success`, `record_failure` or `release`).

Replica names identify replicas: stateful strategies key their state by name, so the candidate
set may change between calls (replicas leaving, joining, or being filtered out for a while).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from largeforge.domain.circuit_breaker import CircuitBreaker

__all__ = [
    "EWMA_ALPHA",
    "STRATEGIES",
    "BalancingStrategy",
    "LeastOutstanding",
    "PowerOfTwoChoices",
    "Replica",
    "RoundRobin",
    "WeightedRoundRobin",
    "choose_replica",
    "strategy_named",
]

#: Weight of the newest latency sample in `Replica.ewma_latency_s`.
EWMA_ALPHA = 0.3


@dataclass(eq=False)
class Replica:
    """Mutable runtime view of one replica of an expert (identity equality; `name` is its key)."""

    name: str
    weight: float = 1.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    outstanding: int = 0
    ewma_latency_s: float | None = None
    draining: bool = False
    healthy: bool = True  # result of the last health check
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Replica.name must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"Replica.weight must be a positive number, got {self.weight!r}")

    def start(self) -> None:
        """A request was sent to this replica."""
        with self._lock:
            self.outstanding += 1

    def finish(self, latency_s: float | None) -> None:
        """A request ended; fold its latency (seconds, when known) into the moving average."""
        with self._lock:
            self.outstanding = max(0, self.outstanding - 1)
            if latency_s is not None and math.isfinite(latency_s) and latency_s >= 0:
                previous = self.ewma_latency_s
                self.ewma_latency_s = (
                    latency_s
                    if previous is None
                    else EWMA_ALPHA * latency_s + (1 - EWMA_ALPHA) * previous
                )

    def eligible(self) -> bool:
        """Whether it may be offered to a strategy: not draining, healthy, breaker available."""
        return not self.draining and self.healthy and self.breaker.available()


class BalancingStrategy(Protocol):
    """Picks one replica among candidates; `candidates` is non-empty and all are eligible."""

    name: str

    def pick(self, candidates: Sequence[Replica]) -> Replica: ...


class RoundRobin:
    """Each replica in turn, in name order; after a change it resumes from the last name picked."""

    name: str = "round_robin"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: str | None = None

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        """The candidate whose name follows the last one picked (wrapping around)."""
        ordered = sorted(candidates, key=_by_name)
        with self._lock:
            last = self._last
            chosen = next((r for r in ordered if last is not None and r.name > last), ordered[0])
            self._last = chosen.name
        return chosen


class WeightedRoundRobin:
    """Smooth weighted round-robin (as in nginx): deterministic and evenly interleaved.

    With a fixed candidate set and integer weights, every window of `sum(weights)` consecutive
    picks holds each replica exactly `weight` times. Replicas that drop out keep their running
    weight (like a peer that is down in nginx), so a flapping replica neither loses nor gains.
    """

    name: str = "weighted"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, float] = {}

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        """Raise every candidate's running weight by its weight, take the highest, lower it."""
        ordered = sorted(candidates, key=_by_name)
        with self._lock:
            current = self._current
            total = 0.0
            chosen = ordered[0]
            best = -math.inf
            for replica in ordered:
                weight = replica.weight if replica.weight > 0 else 0.0
                score = current.get(replica.name, 0.0) + weight
                current[replica.name] = score
                total += weight
                if score > best:
                    chosen, best = replica, score
            current[chosen.name] -= total
            if len(current) > max(64, 4 * len(ordered)):  # forget long-gone replicas
                present = {r.name for r in ordered}
                self._current = {k: v for k, v in current.items() if k in present}
        return chosen


class LeastOutstanding:
    """The replica with the fewest requests in flight; ties are shared round-robin."""

    name: str = "least_outstanding"

    def __init__(self) -> None:
        self._tie_break = RoundRobin()

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        """Round-robin among the candidates with the minimum `outstanding`."""
        fewest = min(r.outstanding for r in candidates)
        return self._tie_break.pick([r for r in candidates if r.outstanding == fewest])


class PowerOfTwoChoices:
    """Sample two distinct replicas, keep the lower `ewma_latency_s * (outstanding + 1)`.

    A replica with no latency yet scores 0, so new replicas get tried.
    """

    name: str = "p2c"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()

    @staticmethod
    def score(replica: Replica) -> float:
        """Expected wait: latency average times the requests it would be serving."""
        return (replica.ewma_latency_s or 0.0) * (replica.outstanding + 1)

    def pick(self, candidates: Sequence[Replica]) -> Replica:
        """The better of two random candidates (fewer outstanding breaks a tie)."""
        if len(candidates) == 1:
            return candidates[0]
        with self._lock:
            i, j = self._rng.sample(range(len(candidates)), 2)
        first, second = candidates[i], candidates[j]
        key_first = (self.score(first), first.outstanding)
        key_second = (self.score(second), second.outstanding)
        return second if key_second < key_first else first


#: Strategy factories by configuration name.
STRATEGIES: dict[str, Callable[[], BalancingStrategy]] = {
    RoundRobin.name: RoundRobin,
    WeightedRoundRobin.name: WeightedRoundRobin,
    LeastOutstanding.name: LeastOutstanding,
    PowerOfTwoChoices.name: PowerOfTwoChoices,
}


def strategy_named(name: str) -> BalancingStrategy:
    """A fresh strategy for a configuration name; ValueError naming the valid ones otherwise."""
    factory = STRATEGIES.get(name)
    if factory is None:
        valid = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown load-balancing strategy {name!r}; valid: {valid}")
    return factory()


def choose_replica(
    replicas: Sequence[Replica],
    strategy: BalancingStrategy,
    exclude: Collection[str] = (),
) -> Replica | None:
    """Pick and admit a replica, or None when no replica admits a request.

    Eligible replicas whose names are not in `exclude` go to `strategy`; the pick's
    `breaker.acquire()` admits it. If that fails (its half-open probe slots were taken
    meanwhile) the pick is dropped and the strategy chooses again among the rest.
    """
    excluded = frozenset(exclude)
    candidates = [r for r in replicas if r.name not in excluded and r.eligible()]
    while candidates:
        picked = strategy.pick(candidates)
        index = next((i for i, r in enumerate(candidates) if r is picked), None)
        if index is None:
            raise ValueError(f"strategy {strategy.name!r} picked a replica it was not offered")
        if picked.breaker.acquire():
            return picked
        del candidates[index]
    return None


def _by_name(replica: Replica) -> str:
    return replica.name
