"""`largeforge eval`'s core with fakes: which variants a run has, the held-out split it scores
(the run's own, with its masks), token-weighted losses with intervals, top-1 agreement, the
table, and the errors a user can make."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.adapters.data.sources import FileRowSource
from largeforge.application.eval_plan import PlanEvaluation, QuantizedModel
from largeforge.application.evaluation import EvaluateModels, HeldoutTask
from largeforge.application.ports import SequenceScore
from largeforge.config import RunConfig
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.errors import ConfigError
from largeforge.domain.evaluation import (
    EvalReport,
    ModelVariant,
    Score,
    TaskKind,
    TaskSpec,
    VariantKind,
    VariantScores,
    markdown_table,
    paired_difference,
    parse_task,
    proportion_score,
    ratio_bootstrap,
)
from largeforge.domain.training import TrainingRun
from tests.conftest import make_container

#: Per-token loss each fake variant scores (lower after training).
LOSSES = {"base": 3.0, "adapter": 2.0, "merged": 2.0, "quantized-awq-w4": 2.2}


@dataclass
class FakeScorer:
    """Loss per token by variant name; the quantized model's top-1 differs at every 4th
    trained position."""

    calls: list[tuple[str, tuple[EncodedExample, ...]]] = field(default_factory=list)

    def score(
        self, variant: ModelVariant, examples: Sequence[EncodedExample], *, top1: bool = False
    ) -> list[SequenceScore]:
        self.calls.append((variant.name, tuple(examples)))
        out = []
        for example in examples:
            tokens = sum(example.trainable[1:])
            predicted = [i for i, t in zip(example.input_ids[1:], example.trainable[1:],
                                           strict=True) if t]  # fmt: skip
            if variant.kind is VariantKind.QUANTIZED:
                predicted = [p + 1 if i % 4 == 0 else p for i, p in enumerate(predicted)]
            out.append(SequenceScore(LOSSES[variant.name] * tokens, tokens, tuple(predicted)))
        return out


@dataclass
class FakeRunFiles:
    runs: dict[str, TrainingRun]
    models: set[str]
    quantized_models: list[QuantizedModel] = field(default_factory=list)

    def run_dir(self, ref: str) -> str | None:
        return ref if ref in self.runs else None

    def load(self, run_dir: str) -> TrainingRun:
        return self.runs[run_dir]

    def locate(self, run_dir: str, recorded: str) -> str | None:
        return recorded if recorded in self.models else None

    def quantized(self, run_dir: str) -> list[QuantizedModel]:
        return self.quantized_models


@pytest.fixture
def trained(fakes: dict[str, Any]) -> tuple[TrainingRun, str, Any]:
    """A run made by the real `RunTraining` with fakes: the fake trainer saw its eval split."""
    plan = RunConfig(model="tiny", dataset="data.jsonl", training={"max_steps": 3}).to_plan()
    outcome = make_container(fakes).run_training().execute(plan)
    return outcome.run, outcome.run_dir, fakes


def planner(fakes: dict[str, Any], files: FakeRunFiles, scorer: FakeScorer) -> PlanEvaluation:
    container = make_container(fakes)
    return PlanEvaluation(
        resolver=fakes["resolver"],
        runs=files,
        prepare=container.prepare_dataset(),
        encoders=fakes["encoders"],
        scorer=scorer,
        factories={},
    )


def files_for(run: TrainingRun, run_dir: str, quantized: bool = False) -> FakeRunFiles:
    assert run.result is not None
    assert run.merged_dir is not None
    return FakeRunFiles(
        {run_dir: run},
        {run.result.adapter_dir, run.merged_dir},
        [QuantizedModel("quantized-awq-w4", "/q", run.merged_dir)] if quantized else [],
    )


def test_a_run_is_compared_as_base_adapter_merged_and_quantized(trained: Any) -> None:
    run, run_dir, fakes = trained
    plan = planner(fakes, files_for(run, run_dir, quantized=True), FakeScorer()).plan(run_dir)
    assert [(v.name, v.kind) for v in plan.variants] == [
        ("base", VariantKind.BASE),
        ("adapter", VariantKind.ADAPTER),
        ("merged", VariantKind.MERGED),
        ("quantized-awq-w4", VariantKind.QUANTIZED),
    ]
    base, adapter, merged, quantized = plan.variants
    assert base.model_dir == adapter.model_dir == "/models/tiny"
    assert adapter.adapter_dir == run.result.adapter_dir  # type: ignore[union-attr]
    assert quantized.reference == merged
    assert [t.name for t in plan.tasks] == ["heldout"]


def test_the_held_out_task_scores_exactly_the_split_training_evaluated(trained: Any) -> None:
    run, run_dir, fakes = trained
    scorer = FakeScorer()
    plan = planner(fakes, files_for(run, run_dir), scorer).plan(run_dir, compare=["base"])
    plan.tasks[0].evaluate(plan.variants[0])
    (trained_call,) = fakes["trainer"].calls
    assert scorer.calls == [("base", tuple(trained_call["eval"]))]
    assert all(any(e.trainable) for e in trained_call["eval"])


def test_compare_picks_variants_and_names_what_is_missing(trained: Any) -> None:
    run, run_dir, fakes = trained
    plan = planner(fakes, files_for(run, run_dir), FakeScorer())
    chosen = plan.run_variants(run, run_dir, "/models/tiny", ["merged", "base"])
    assert [v.name for v in chosen] == ["merged", "base"]
    with pytest.raises(ConfigError, match=r"--compare quantized: .*largeforge quantize"):
        plan.plan(run_dir, compare=["quantized"])
    with pytest.raises(ConfigError, match=r"--compare mergd: not a variant .*NAME=MODEL"):
        plan.plan(run_dir, compare=["mergd"])
    with pytest.raises(ConfigError, match="names base more than once"):
        plan.plan(run_dir, compare=["base", "base=tiny"])
    no_merge = FakeRunFiles({run_dir: run}, {run.result.adapter_dir})  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"no merged model .*largeforge merge"):
        planner(fakes, no_merge, FakeScorer()).plan(run_dir, compare=["merged"])


def test_a_model_reference_compares_named_models_and_needs_a_dataset_for_heldout(
    fakes: dict[str, Any],
) -> None:
    fakes["resolver"].known["other"] = "/models/other"
    plan = planner(fakes, FakeRunFiles({}, set()), FakeScorer())
    with pytest.raises(ConfigError, match="heldout:FILE"):
        plan.plan("tiny")
    made = plan.plan("tiny", ["heldout:data.jsonl"], ["mine=other"])
    assert [(v.name, v.model_dir) for v in made.variants] == [
        ("tiny", "/models/tiny"),
        ("mine", "/models/other"),
    ]
    assert made.tasks[0].name == "heldout:data.jsonl"
    with pytest.raises(ConfigError, match="not a run directory"):
        plan.plan("tiny", ["heldout:data.jsonl"], ["merged"])


def test_heldout_loss_is_token_weighted_with_a_bootstrap_interval() -> None:
    examples = [EncodedExample((1, 2, 3, 4, 5, 6), (False,) + (True,) * 5),
                EncodedExample((1, 2), (False, True))]  # fmt: skip

    class Scorer:
        def score(self, variant: ModelVariant, examples: Any, *, top1: bool = False) -> Any:
            return [SequenceScore(10.0, 5), SequenceScore(4.0, 1)]

    task = HeldoutTask(examples, Scorer(), resamples=200)
    loss, perplexity = task.evaluate(ModelVariant("m", VariantKind.MODEL, "/m"))
    assert loss.value == pytest.approx(14 / 6)  # not the mean of per-example losses (3.0)
    assert loss.low is not None
    assert loss.high is not None
    assert 2.0 <= loss.low <= loss.value <= loss.high <= 4.0
    assert perplexity.value == pytest.approx(math.exp(14 / 6))
    assert not loss.higher_is_better
    assert not perplexity.higher_is_better


def test_quantized_models_report_top1_agreement_with_their_reference(trained: Any) -> None:
    run, run_dir, fakes = trained
    scorer = FakeScorer()
    plan = planner(fakes, files_for(run, run_dir, quantized=True), scorer).plan(
        run_dir, compare=["quantized"]
    )
    (quantized,) = plan.variants
    scores = {s.metric: s for s in plan.tasks[0].evaluate(quantized)}
    agreement = scores["top1_agreement_vs_merged"]
    positions = sum(sum(e.trainable[1:]) for e in scorer.calls[0][1])
    differing = sum(math.ceil(sum(e.trainable[1:]) / 4) for e in scorer.calls[0][1])
    assert agreement.value == pytest.approx((positions - differing) / positions)
    assert [name for name, _ in scorer.calls] == ["quantized-awq-w4", "merged"]


def test_evaluate_models_scores_every_variant_on_every_task_and_writes() -> None:
    written: list[tuple[EvalReport, str]] = []

    class Writer:
        def write(self, report: EvalReport, out_dir: str) -> list[str]:
            written.append((report, out_dir))
            return [out_dir]

    class Task:
        def __init__(self, name: str) -> None:
            self.name = name

        def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]:
            return (Score(self.name, "acc", 0.5 if variant.name == "a" else 0.75, n=4),)

    variants = [
        ModelVariant("a", VariantKind.MODEL, "/a"),
        ModelVariant("b", VariantKind.MODEL, "/b"),
    ]
    report = EvaluateModels(Writer()).execute(variants, [Task("t1"), Task("t2")], "/out")
    assert written == [(report, "/out")]
    assert report.metric_keys() == [("t1", "acc"), ("t2", "acc")]
    assert report.score("b", "t2", "acc").value == 0.75  # type: ignore[union-attr]
    table = markdown_table(report)
    assert table.splitlines()[0] == "| task | metric | a | b | b - a |"
    assert "| t1 | acc | 0.5000 | 0.7500 | +0.2500 |" in table
    with pytest.raises(ConfigError, match="no tasks"):
        EvaluateModels(Writer()).execute(variants, [])


def test_the_table_shows_a_paired_interval_for_differences_on_the_same_examples() -> None:
    def scored(name: str, outcomes: list[bool]) -> VariantScores:
        variant = ModelVariant(name, VariantKind.MODEL, f"/{name}")
        return VariantScores(variant, (proportion_score("gen", "match", outcomes),))

    base = [True, False, False, True] * 10
    better = [True, True, False, True] * 10  # right wherever base was, and more
    report = EvalReport((scored("base", base), scored("tuned", better)))
    difference = paired_difference(
        report.score("tuned", "gen", "match"),  # type: ignore[arg-type]
        report.score("base", "gen", "match"),  # type: ignore[arg-type]
    )
    assert difference is not None
    point, low, high = difference
    assert point == pytest.approx(0.25)
    assert 0 < low <= point <= high  # paired: never below zero, since tuned never loses
    assert f"+0.2500 [{low:+.4f}, {high:+.4f}]" in markdown_table(report)


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_a_wilson_interval_holds_the_rate_and_stays_in_zero_one(outcomes: list[bool]) -> None:
    score = proportion_score("t", "m", outcomes)
    assert score.low is not None
    assert score.high is not None
    assert 0.0 <= score.low <= score.value <= score.high <= 1.0
    assert score.n == len(outcomes)


@given(
    st.lists(st.tuples(st.floats(0, 50), st.integers(1, 40)), min_size=1, max_size=30),
    st.floats(0.1, 10),
)
def test_bootstrap_intervals_are_ordered_and_collapse_when_every_example_agrees(
    pairs: list[tuple[float, int]], per_token: float
) -> None:
    nll, tokens = [p[0] for p in pairs], [float(p[1]) for p in pairs]
    value, low, high, stderr = ratio_bootstrap(nll, tokens, resamples=50)
    assert low <= high
    assert stderr >= 0
    assert value == pytest.approx(sum(nll) / sum(tokens))
    same = [per_token * t for t in tokens]  # every example has the same per-token loss
    value, low, high, _ = ratio_bootstrap(same, tokens, resamples=50)
    assert low == pytest.approx(value) == pytest.approx(high) == pytest.approx(per_token)


@given(
    st.sampled_from(list(TaskKind)),
    st.from_regex(r"[A-Za-z0-9_./-]+", fullmatch=True),
)
def test_task_labels_parse_back_to_their_spec(kind: TaskKind, argument: str) -> None:
    spec = TaskSpec(kind, argument)
    assert parse_task(spec.label) == spec
    if kind in (TaskKind.HELDOUT, TaskKind.TOOLS, TaskKind.TOOLS_FREE):
        assert parse_task(kind.value) == TaskSpec(kind)


@pytest.mark.parametrize("text", ["", "  ", "lm:", "generate:"])
def test_task_entries_without_what_they_need_are_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--tasks"):
        parse_task(text)


def test_a_bare_name_is_a_harness_task() -> None:
    assert parse_task("arc_easy") == TaskSpec(TaskKind.LM_EVAL, "arc_easy")
    assert parse_task("tasks/mine.yaml") == TaskSpec(TaskKind.LM_EVAL, "tasks/mine.yaml")
    assert replace(parse_task("tools"), argument="f.jsonl").label == "tools:f.jsonl"


def test_the_free_tool_task_is_the_tool_task_without_the_grammar() -> None:
    from largeforge.container import _eval_task_factories

    factories = _eval_task_factories("cpu", FileRowSource(), engines=None)  # type: ignore[arg-type]
    context: Any = None
    free = factories[TaskKind.TOOLS_FREE](parse_task("tools-free"), context)
    constrained = factories[TaskKind.TOOLS](parse_task("tools"), context)
    assert (free.name, constrained.name) == ("tools-free", "tools")
    assert (free._grammar, constrained._grammar) == (False, True)  # type: ignore[attr-defined]
