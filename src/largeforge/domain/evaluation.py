"""Evaluation: the model variants compared, the scores with their uncertainty, and the table.

A score always carries its uncertainty: a 95 % interval (bootstrap over examples for losses,
Wilson for rates, the harness's standard error for lm-evaluation-harness tasks) and, where
defined, a standard error. Pure functions; the seeded bootstrap is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from largeforge.domain.errors import ConfigError

#: z for a two-sided 95 % interval.
Z95 = 1.959963984540054


class VariantKind(StrEnum):
    """What a compared model is, relative to a training run."""

    BASE = "base"
    ADAPTER = "adapter"  # the base with the run's adapter applied (not merged)
    MERGED = "merged"
    QUANTIZED = "quantized"
    MODEL = "model"  # a model reference outside a run


RUN_VARIANTS = (VariantKind.BASE, VariantKind.ADAPTER, VariantKind.MERGED, VariantKind.QUANTIZED)


@dataclass(frozen=True, slots=True)
class ModelVariant:
    """One column of the table: the weights to load and how.

    `model_dir` is a model directory (for an adapter: its base); `adapter_dir` a PEFT adapter
    applied on top; `reference` the unquantized model a quantized one was made from (scored for
    top-1 token agreement).
    """

    name: str
    kind: VariantKind
    model_dir: str
    adapter_dir: str | None = None
    reference: ModelVariant | None = None


@dataclass(frozen=True, slots=True)
class Score:
    """One metric of one task for one model, with its 95 % interval (`low`, `high`)."""

    task: str
    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    stderr: float | None = None
    n: int = 0
    higher_is_better: bool = True
    samples: tuple[tuple[float, float], ...] = field(default=(), repr=False, compare=False)
    """Per-example (numerator, denominator): the value is sum(num) / sum(den) (or its exp for
    `exp_of_ratio`), so two models scored on the same examples get a paired interval on
    their difference."""
    exp_of_ratio: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.metric)

    def as_dict(self) -> dict[str, object]:
        return {
            "task": self.task,
            "metric": self.metric,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "stderr": self.stderr,
            "n": self.n,
            "higher_is_better": self.higher_is_better,
        }


@dataclass(frozen=True, slots=True)
class VariantScores:
    variant: ModelVariant
    scores: tuple[Score, ...]


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Every variant's scores on every task, in the order they were given."""

    results: tuple[VariantScores, ...]
    metadata: Mapping[str, object] = field(default_factory=dict)

    @property
    def variants(self) -> tuple[ModelVariant, ...]:
        return tuple(r.variant for r in self.results)

    def metric_keys(self) -> list[tuple[str, str]]:
        """(task, metric) pairs in first-seen order."""
        seen: dict[tuple[str, str], None] = {}
        for result in self.results:
            for score in result.scores:
                seen.setdefault(score.key, None)
        return list(seen)

    def score(self, variant: str, task: str, metric: str) -> Score | None:
        for result in self.results:
            if result.variant.name == variant:
                for score in result.scores:
                    if score.key == (task, metric):
                        return score
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "metadata": dict(self.metadata),
            "variants": [
                {
                    "name": r.variant.name,
                    "kind": r.variant.kind.value,
                    "model_dir": r.variant.model_dir,
                    "adapter_dir": r.variant.adapter_dir,
                    "reference": r.variant.reference.name if r.variant.reference else None,
                    "scores": [s.as_dict() for s in r.scores],
                }
                for r in self.results
            ],
        }


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error (None for fewer than two values)."""
    if not values:
        raise ConfigError("no values to average")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def ratio_bootstrap(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float, float]:
    """sum(num) / sum(den) over examples (a token-weighted mean loss, say), with a percentile
    bootstrap interval and standard error from resampling whole examples.

    Returns (value, low, high, stderr).
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ConfigError("ratio_bootstrap needs as many numerators as denominators, at least one")
    total = math.fsum(denominators)
    if total <= 0:
        raise ConfigError("ratio_bootstrap: the denominators sum to zero")
    value = math.fsum(numerators) / total
    n = len(numerators)
    rng = random.Random(seed)
    stats: list[float] = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        den = math.fsum(denominators[i] for i in picks)
        if den > 0:
            stats.append(math.fsum(numerators[i] for i in picks) / den)
    stats.sort()
    alpha = (1.0 - level) / 2
    low = stats[int(alpha * (len(stats) - 1))]
    high = stats[math.ceil((1 - alpha) * (len(stats) - 1))]
    mean, _ = mean_and_stderr(stats)
    stderr = math.sqrt(math.fsum((s - mean) ** 2 for s in stats) / max(len(stats) - 1, 1))
    return value, low, high, stderr


def proportion_score(
    task: str, metric: str, outcomes: Sequence[bool], *, higher_is_better: bool = True
) -> Score:
    """The share of true outcomes, with its standard error and a Wilson 95 % interval (which
    stays inside [0, 1] and is sensible at 0 % and 100 %)."""
    n = len(outcomes)
    if n == 0:
        raise ConfigError(f"{task}: no examples to score {metric} on")
    p = sum(1 for o in outcomes if o) / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Score(
        samples=tuple((1.0 if o else 0.0, 1.0) for o in outcomes),
        task=task,
        metric=metric,
        value=p,
        low=min(p, max(0.0, centre - half)),  # min/max: rounding at p = 0 or 1
        high=max(p, min(1.0, centre + half)),
        stderr=math.sqrt(p * (1 - p) / n),
        n=n,
        higher_is_better=higher_is_better,
    )


def stderr_score(
    task: str,
    metric: str,
    value: float,
    stderr: float | None,
    n: int,
    *,
    higher_is_better: bool = True,
) -> Score:
    """A score reported with a standard error (lm-evaluation-harness): interval +-1.96 se."""
    low = high = None
    if stderr is not None and math.isfinite(stderr):
        low, high = value - Z95 * stderr, value + Z95 * stderr
    else:
        stderr = None
    return Score(task, metric, value, low, high, stderr, n, higher_is_better)


def paired_difference(
    left: Score, right: Score, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float] | None:
    """left - right with a 95 % paired bootstrap interval (the same examples resampled for
    both), or None when the two were not scored per example on the same examples."""
    if not left.samples or len(left.samples) != len(right.samples):
        return None

    def value(samples: Sequence[tuple[float, float]], picks: Sequence[int]) -> float:
        den = math.fsum(samples[i][1] for i in picks)
        ratio = math.fsum(samples[i][0] for i in picks) / den if den else 0.0
        return math.exp(ratio) if left.exp_of_ratio else ratio

    n = len(left.samples)
    everything = range(n)
    point = value(left.samples, everything) - value(right.samples, everything)
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        stats.append(value(left.samples, picks) - value(right.samples, picks))
    stats.sort()
    return point, stats[int(0.025 * (resamples - 1))], stats[math.ceil(0.975 * (resamples - 1))]


def format_difference(left: Score | None, right: Score | None) -> str:
    """`-0.5017 [-0.571, -0.436]` (paired interval), or the plain difference, or `-`."""
    if left is None or right is None:
        return "-"
    paired = paired_difference(left, right)
    if paired is None:
        return f"{left.value - right.value:+.4f}"
    point, low, high = paired
    return f"{point:+.4f} [{low:+.4f}, {high:+.4f}]"


def _fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def format_score(score: Score | None) -> str:
    """`2.442 [2.301, 2.590]`, or `-` for a task the model was not scored on."""
    if score is None:
        return "-"
    if score.low is None or score.high is None:
        return _fmt(score.value)
    return f"{_fmt(score.value)} [{_fmt(score.low)}, {_fmt(score.high)}]"


def difference_columns(variants: Sequence[ModelVariant]) -> list[tuple[str, str]]:
    """(variant, against) pairs shown as differences: each variant against the first (base)."""
    if len(variants) < 2:
        return []
    first = variants[0].name
    return [(v.name, first) for v in variants[1:]]


def markdown_table(report: EvalReport) -> str:
    """One row per task and metric, one column per model, then each model minus the first."""
    names = [v.name for v in report.variants]
    diffs = difference_columns(report.variants)
    header = ["task", "metric", *names, *(f"{a} - {b}" for a, b in diffs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, metric in report.metric_keys():
        cells = [report.score(name, task, metric) for name in names]
        row = [task, metric, *(format_score(c) for c in cells)]
        for a, b in diffs:
            row.append(
                format_difference(report.score(a, task, metric), report.score(b, task, metric))
            )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


class TaskKind(StrEnum):
    """The kinds of evaluation task `--tasks` names."""

    HELDOUT = "heldout"  # loss and perplexity with the run's own masks
    LM_EVAL = "lm"  # an lm-evaluation-harness task (a name or a task YAML)
    GENERATE = "generate"  # prompts with references (exact, contains, regex, json_schema)
    TOOLS = "tools"  # tool-call rows: right function, equal arguments, no call when none
    TOOLS_FREE = "tools-free"  # the same without the grammar: calls parsed from free text


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One `--tasks` entry: `heldout[:FILE]`, `lm:NAME|lm:FILE.yaml` (a bare `NAME` or
    `FILE.yaml` means the same), `generate:FILE`, `tools[:FILE]` (bare: the bundled set),
    `tools-free[:FILE]` (the tool task without the grammar)."""

    kind: TaskKind
    argument: str | None = None

    @property
    def label(self) -> str:
        return self.kind.value if self.argument is None else f"{self.kind.value}:{self.argument}"


def parse_task(text: str) -> TaskSpec:
    """Parse one `--tasks` entry; an empty entry or a kind that needs a file and has none is a
    `ConfigError` naming the entry."""
    text = text.strip()
    if not text:
        raise ConfigError("--tasks: an empty task name")
    head, sep, rest = text.partition(":")
    kinds = {k.value: k for k in TaskKind}
    if sep and head in kinds:
        kind, argument = kinds[head], rest.strip() or None
        if argument is None and kind in (TaskKind.LM_EVAL, TaskKind.GENERATE):
            raise ConfigError(f"--tasks {text!r}: {kind.value}: needs a task name or a file")
        return TaskSpec(kind, argument)
    if text in (TaskKind.HELDOUT.value, TaskKind.TOOLS.value, TaskKind.TOOLS_FREE.value):
        return TaskSpec(kinds[text])
    return TaskSpec(TaskKind.LM_EVAL, text)  # a harness task name or a task YAML
