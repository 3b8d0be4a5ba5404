"""Replica selection: strategy fairness and choice, admission through the circuit breakers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.domain.circuit_breaker import BreakerPolicy, BreakerState, CircuitBreaker
from largeforge.domain.load_balancing import (
    STRATEGIES,
    LeastOutstanding,
    PowerOfTwoChoices,
    Replica,
    RoundRobin,
    WeightedRoundRobin,
    choose_replica,
    strategy_named,
)

FAST = settings(max_examples=60, deadline=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def replicas(n: int) -> list[Replica]:
    return [Replica(f"r{i}") for i in range(n)]


def breaker_in(state: BreakerState, *, probe_taken: bool = False) -> CircuitBreaker:
    """A breaker (one probe slot, frozen clock) in the given state."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), clock=clock)
    if state is not BreakerState.CLOSED:
        breaker.record_failure()
    if state is BreakerState.HALF_OPEN:
        clock.now = 10.0
        if probe_taken:
            assert breaker.acquire()
    assert breaker.state is state
    return breaker


# -- replicas -----------------------------------------------------------------------------------


def test_finish_folds_latency_into_the_ewma_and_never_goes_below_zero() -> None:
    replica = Replica("a")
    replica.start()
    replica.finish(1.0)
    assert replica.ewma_latency_s == 1.0
    replica.start()
    replica.finish(2.0)
    assert replica.ewma_latency_s == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)
    replica.finish(None)
    assert replica.outstanding == 0
    assert replica.ewma_latency_s == pytest.approx(1.3)


def test_eligibility() -> None:
    assert Replica("a").eligible()
    assert not Replica("a", draining=True).eligible()
    assert not Replica("a", healthy=False).eligible()
    assert not Replica("a", breaker=breaker_in(BreakerState.OPEN)).eligible()
    assert Replica("a", breaker=breaker_in(BreakerState.HALF_OPEN)).eligible()
    assert not Replica("a", breaker=breaker_in(BreakerState.HALF_OPEN, probe_taken=True)).eligible()


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_replica_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Replica("a", weight=weight)


# -- strategies ---------------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 6), k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_round_robin_is_fair_whatever_the_candidate_order(n: int, k: int, seed: int) -> None:
    pool, rng, strategy = replicas(n), random.Random(seed), RoundRobin()
    picks = []
    for _ in range(k * n):
        rng.shuffle(pool)
        picks.append(strategy.pick(pool).name)
    assert Counter(picks) == {f"r{i}": k for i in range(n)}


@FAST
@given(
    before=st.sets(st.integers(0, 7), min_size=1),
    after=st.sets(st.integers(0, 7), min_size=1),
    warmup=st.integers(0, 10),
)
def test_round_robin_covers_a_changed_set_in_one_turn(
    before: set[int], after: set[int], warmup: int
) -> None:
    strategy = RoundRobin()
    for _ in range(warmup):
        strategy.pick([Replica(f"r{i}") for i in sorted(before)])
    new = [Replica(f"r{i}") for i in sorted(after)]
    assert sorted(strategy.pick(new).name for _ in new) == sorted(r.name for r in new)


@FAST
@given(weights=st.lists(st.integers(1, 6), min_size=1, max_size=5), rounds=st.integers(1, 3))
def test_weighted_round_robin_gives_exact_shares_smoothly(weights: list[int], rounds: int) -> None:
    pool = [Replica(f"r{i}", weight=w) for i, w in enumerate(weights)]
    strategy, total = WeightedRoundRobin(), sum(weights)
    picks = [int(strategy.pick(pool).name[1:]) for _ in range(total * (rounds + 1))]
    # every window of sum(weights) consecutive picks holds each replica exactly weight times
    for start in range(total * rounds + 1):
        assert Counter(picks[start : start + total]) == dict(enumerate(weights))
    # smooth: no prefix gives a replica more than the ceiling of its share (count < share + 1)
    counts = [0] * len(weights)
    for length, index in enumerate(picks, start=1):
        counts[index] += 1
        for count, weight in zip(counts, weights, strict=True):
            assert count * total - length * weight < total


@FAST
@given(
    weights=st.lists(st.integers(1, 5), min_size=2, max_size=5),
    changes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), max_size=6),
)
def test_weighted_round_robin_stays_fair_when_replicas_come_and_go(
    weights: list[int], changes: list[tuple[int, int]]
) -> None:
    pool = [Replica(f"r{i}", weight=w) for i, w in enumerate(weights)]
    strategy, total = WeightedRoundRobin(), sum(weights)
    for gone, picks in changes:  # replica `gone` is out for a few picks
        rest = [r for r in pool if r.name != f"r{gone}"] or pool
        for _ in range(picks):
            assert strategy.pick(rest) in rest
    counts = Counter(int(strategy.pick(pool).name[1:]) for _ in range(10 * total))
    for index, weight in enumerate(weights):
        assert abs(counts[index] - 10 * weight) <= 2


@FAST
@given(outstanding=st.lists(st.integers(0, 3), min_size=1, max_size=6))
def test_least_outstanding_picks_a_minimum_and_shares_ties(outstanding: list[int]) -> None:
    pool = [Replica(f"r{i}", outstanding=o) for i, o in enumerate(outstanding)]
    strategy, fewest = LeastOutstanding(), min(outstanding)
    tied = {r.name for r in pool if r.outstanding == fewest}
    picks = [strategy.pick(pool) for _ in range(2 * len(tied))]
    assert all(p.outstanding == fewest for p in picks)
    assert Counter(p.name for p in picks) == dict.fromkeys(tied, 2)


def test_least_outstanding_follows_the_load() -> None:
    pool, strategy = replicas(3), LeastOutstanding()
    for _ in range(6):
        strategy.pick(pool).start()
    assert [r.outstanding for r in pool] == [2, 2, 2]
    pool[1].finish(0.1)
    assert strategy.pick(pool) is pool[1]


latencies = st.one_of(st.none(), st.floats(0.001, 10.0))


@FAST
@given(a=st.tuples(latencies, st.integers(0, 5)), b=st.tuples(latencies, st.integers(0, 5)))
def test_p2c_with_two_candidates_picks_the_lower_score(
    a: tuple[float | None, int], b: tuple[float | None, int]
) -> None:
    pool = [
        Replica("a", ewma_latency_s=a[0], outstanding=a[1]),
        Replica("b", ewma_latency_s=b[0], outstanding=b[1]),
    ]
    picked = PowerOfTwoChoices(random.Random(0)).pick(pool)
    other = pool[1] if picked is pool[0] else pool[0]
    assert PowerOfTwoChoices.score(picked) <= PowerOfTwoChoices.score(other)


@FAST
@given(
    pool=st.lists(st.tuples(latencies, st.integers(0, 5)), min_size=2, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_p2c_never_picks_a_strictly_worst_replica(
    pool: list[tuple[float | None, int]], seed: int
) -> None:
    candidates = [
        Replica(f"r{i}", ewma_latency_s=lat, outstanding=out) for i, (lat, out) in enumerate(pool)
    ]
    strategy = PowerOfTwoChoices(random.Random(seed))
    keys = [(PowerOfTwoChoices.score(r), r.outstanding) for r in candidates]
    for _ in range(5):
        picked = candidates.index(strategy.pick(candidates))
        assert any(keys[picked] <= key for i, key in enumerate(keys) if i != picked)


def test_p2c_tries_replicas_without_latency_first() -> None:
    pool = [Replica("slow", ewma_latency_s=0.5), Replica("new")]
    assert PowerOfTwoChoices().pick(pool).name == "new"
    assert PowerOfTwoChoices().pick(pool[:1]).name == "slow"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_named_builds_fresh_strategies(name: str) -> None:
    strategy = strategy_named(name)
    assert strategy.name == name
    assert strategy is not strategy_named(name)
    pool = replicas(3)
    assert strategy.pick(pool) in pool


def test_strategy_names() -> None:
    assert set(STRATEGIES) == {"round_robin", "weighted", "least_outstanding", "p2c"}


@given(name=st.text(max_size=12).filter(lambda s: s not in STRATEGIES))
@settings(max_examples=20, deadline=None)
def test_unknown_strategy_lists_the_valid_names(name: str) -> None:
    with pytest.raises(ValueError, match="valid: least_outstanding, p2c, round_robin, weighted"):
        strategy_named(name)


# -- choose_replica -----------------------------------------------------------------------------

replica_specs = st.tuples(
    st.booleans(),  # draining
    st.booleans(),  # healthy
    st.sampled_from(["closed", "open", "half_open", "half_open_taken"]),
    st.booleans(),  # excluded
)


def build(specs: Sequence[tuple[bool, bool, str, bool]]) -> tuple[list[Replica], set[str]]:
    pool, excluded = [], set()
    for i, (draining, healthy, breaker, exclude) in enumerate(specs):
        state = BreakerState(breaker.removesuffix("_taken"))
        pool.append(
            Replica(
                f"r{i}",
                draining=draining,
                healthy=healthy,
                breaker=breaker_in(state, probe_taken=breaker.endswith("_taken")),
            )
        )
        if exclude:
            excluded.add(f"r{i}")
    return pool, excluded


@FAST
@given(
    specs=st.lists(replica_specs, max_size=6),
    strategy_name=st.sampled_from(sorted(STRATEGIES)),
)
def test_choose_replica_only_admits_eligible_replicas(
    specs: list[tuple[bool, bool, str, bool]], strategy_name: str
) -> None:
    pool, excluded = build(specs)
    admissible = [r for r in pool if r.name not in excluded and r.eligible()]
    states_before = {r.name: r.breaker.state for r in pool}
    chosen = choose_replica(pool, strategy_named(strategy_name), exclude=excluded)
    if not admissible:
        assert chosen is None
        return
    assert chosen is not None
    assert chosen in admissible
    assert not chosen.draining
    assert chosen.healthy
    assert chosen.name not in excluded
    assert states_before[chosen.name] is not BreakerState.OPEN
    if states_before[chosen.name] is BreakerState.HALF_OPEN:
        assert not chosen.breaker.available()  # its only probe slot was taken


class RefusingBreaker(CircuitBreaker):
    """Looks available but loses every acquire race (its probe slot went to someone else)."""

    def acquire(self) -> bool:
        return False


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_choose_replica_moves_on_when_an_acquire_is_lost(name: str) -> None:
    losers = [Replica(f"a{i}", breaker=RefusingBreaker()) for i in range(3)]
    winner = Replica("b")
    assert choose_replica([*losers, winner], strategy_named(name)) is winner
    assert choose_replica(losers, strategy_named(name)) is None
    assert choose_replica([*losers, winner], strategy_named(name), exclude={"b"}) is None


def test_choose_replica_with_nothing_to_choose() -> None:
    assert choose_replica([], RoundRobin()) is None


def test_choose_replica_rejects_a_strategy_that_picks_outside_the_candidates() -> None:
    class Rogue:
        name = "rogue"

        def pick(self, candidates: Sequence[Replica]) -> Replica:
            return Replica("elsewhere")

    with pytest.raises(ValueError, match="rogue"):
        choose_replica(replicas(2), Rogue())
