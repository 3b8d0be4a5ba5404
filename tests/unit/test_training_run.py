"""The TrainingRun state machine: legal transitions only, terminal states are final."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from largeforge.domain import (
    InvalidTransitionError,
    LoraSpec,
    RunState,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
)
from largeforge.domain.formats import DatasetSpec
from largeforge.domain.training import (
    PACK_BELOW,
    AdapterKind,
    DpoOptions,
    TrainingMethod,
    UnitKind,
    allowed_transitions,
    decide_packing,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = TrainingPlan(model="m", datasets=(DatasetSpec("d"),))
RESULT = TrainingResult("a", 1, 1.0, 2.0, 1.0, 10, 2)


def test_happy_path_records_history_and_duration() -> None:
    run = TrainingRun("r", PLAN, created_at=T0)
    run = run.start(T0 + timedelta(seconds=1))
    run = run.succeed(T0 + timedelta(seconds=11), RESULT, "merged")
    assert run.state is RunState.SUCCEEDED
    assert [s for s, _ in run.history] == [RunState.RUNNING, RunState.SUCCEEDED]
    assert run.duration_seconds == 10
    assert run.is_terminal


def test_interrupted_run_can_resume_and_keeps_first_start() -> None:
    run = TrainingRun("r", PLAN).start(T0).interrupt(T0 + timedelta(seconds=5), "killed")
    assert run.state is RunState.INTERRUPTED
    assert run.error == "killed"
    resumed = run.start(T0 + timedelta(seconds=9))
    assert resumed.state is RunState.RUNNING
    assert resumed.started_at == T0
    assert resumed.error is None


@pytest.mark.parametrize("terminal", [RunState.SUCCEEDED, RunState.FAILED])
def test_terminal_states_refuse_every_transition(terminal: RunState) -> None:
    run = TrainingRun("r", PLAN).start(T0)
    run = run.succeed(T0, RESULT, None) if terminal is RunState.SUCCEEDED else run.fail(T0, "x")
    for attempt in (
        lambda: run.start(T0),
        lambda: run.fail(T0, "again"),
        lambda: run.interrupt(T0),
        lambda: run.succeed(T0, RESULT, None),
    ):
        with pytest.raises(InvalidTransitionError, match=terminal.value):
            attempt()


def test_cannot_succeed_without_running() -> None:
    with pytest.raises(InvalidTransitionError, match="pending to succeeded"):
        TrainingRun("r", PLAN).succeed(T0, RESULT, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": -1}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": ()}, "target"),
    ],
)
def test_lora_spec_rejects_invalid_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraSpec(**kwargs)  # type: ignore[arg-type]


class RunMachine(RuleBasedStateMachine):
    """Random sequences of transitions: each either succeeds legally or raises, never corrupts."""

    def __init__(self) -> None:
        super().__init__()
        self.run = TrainingRun("r", PLAN, created_at=T0)
        self.clock = T0
        self.transitions = 0

    def _attempt(self, target: RunState, move: object) -> None:
        self.clock += timedelta(seconds=1)
        before = self.run
        legal = target in allowed_transitions(before.state)
        try:
            self.run = move(self.clock)  # type: ignore[operator]
        except InvalidTransitionError:
            assert not legal
            assert self.run is before
        else:
            assert legal
            self.transitions += 1

    @rule()
    def start(self) -> None:
        self._attempt(RunState.RUNNING, self.run.start)

    @rule()
    def succeed(self) -> None:
        self._attempt(RunState.SUCCEEDED, lambda at: self.run.succeed(at, RESULT, None))

    @rule(reason=st.text(max_size=10))
    def fail(self, reason: str) -> None:
        self._attempt(RunState.FAILED, lambda at: self.run.fail(at, reason))

    @rule()
    def interrupt(self) -> None:
        self._attempt(RunState.INTERRUPTED, self.run.interrupt)

    @invariant()
    def history_matches_state(self) -> None:
        assert len(self.run.history) == self.transitions
        if self.run.history:
            assert self.run.history[-1][0] is self.run.state
        times = [at for _, at in self.run.history]
        assert times == sorted(times)

    @invariant()
    def finished_iff_terminal(self) -> None:
        assert (self.run.finished_at is not None) == self.run.is_terminal


TestRunMachine = RunMachine.TestCase


@given(st.sampled_from(list(RunState)))
def test_transition_table_never_leaves_terminal(state: RunState) -> None:
    if state in (RunState.SUCCEEDED, RunState.FAILED):
        assert allowed_transitions(state) == frozenset()
    else:
        assert RunState.FAILED in allowed_transitions(state)


@pytest.mark.parametrize("setting", [True, False])
def test_explicit_packing_is_kept(setting: bool) -> None:
    for accelerator in (True, False):
        decision = decide_packing(setting, [10_000], 256, accelerator)
        assert decision.pack is setting
        assert "run file" in decision.reason


def test_auto_packs_short_samples_on_accelerators_only() -> None:
    short = [20, 40, 60]
    assert decide_packing("auto", short, 256, accelerator=True).pack
    on_cpu = decide_packing("auto", short, 256, accelerator=False)
    assert not on_cpu.pack
    assert "CPU" in on_cpu.reason
    long = decide_packing("auto", [100, 200, 300], 256, accelerator=True)
    assert not long.pack
    assert "median sample of 200 tokens" in long.reason
    assert not decide_packing("auto", [], 256, accelerator=True).pack


@given(st.lists(st.integers(1, 4096), min_size=1), st.integers(16, 4096))
def test_auto_packs_exactly_when_the_median_is_short(lengths: list[int], max_length: int) -> None:
    median = sorted(lengths)[len(lengths) // 2]
    decision = decide_packing("auto", lengths, max_length, accelerator=True)
    assert decision.pack == (median <= PACK_BELOW * max_length)


def test_packing_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="packing must be"):
        decide_packing("yes", [1], 256, accelerator=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="packing must be"):
        TrainingPlan(model="m", datasets=(DatasetSpec("d"),), packing="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SFT only"):
        TrainingPlan(model="m", datasets=(DatasetSpec("d"),), method="dpo", packing=True)


def test_methods_and_adapters_are_enums_and_strings_become_them() -> None:
    plan = TrainingPlan(model="m", datasets=(DatasetSpec("d"),), method="dpo", adapter="full")
    assert plan.method is TrainingMethod.DPO
    assert plan.adapter is AdapterKind.FULL
    assert plan.adapter.writes_whole_model
    assert not AdapterKind.LORA.writes_whole_model
    assert AdapterKind.QLORA.quantized_base
    assert TrainingMethod.DPO.unit_kind is UnitKind.PAIRS
    assert TrainingMethod.SFT.unit_kind is UnitKind.CONVERSATIONS
    assert TrainingMethod.SFT.can_pack
    assert not TrainingMethod.DPO.can_pack


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"method": "ppo"},
            "method must be one of 'sft', 'dpo', 'kto', 'orpo', 'simpo', 'grpo', got 'ppo'",
        ),
        ({"adapter": "half"}, "adapter must be one of 'lora', 'qlora', 'full', got 'half'"),
        ({"method": "dpo", "packing": True}, "packing applies to SFT only"),
    ],
)
def test_an_unknown_method_or_adapter_names_the_valid_ones(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingPlan(model="m", datasets=(DatasetSpec("d"),), **fields)  # type: ignore[arg-type]


def test_the_dpo_options_are_checked() -> None:
    with pytest.raises(ValueError, match="dpo beta must be positive"):
        DpoOptions(beta=0)
    with pytest.raises(ValueError, match="loss_type must be one of sigmoid, ipo, hinge"):
        DpoOptions(loss_type="kto")
