"""The `EvaluateModels` use case: every variant scored on every task, into one report.

Variants are evaluated one after another (each task loads a variant and frees it), so memory
holds one model at a time. The held-out task scores the run's own validation split with its
own loss masks; quantized variants also get their top-1 token agreement with the model they
were quantized from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from largeforge.application.ports import EvaluationTask, SequenceScore, SequenceScorer
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.errors import ConfigError
from largeforge.domain.evaluation import (
    EvalReport,
    ModelVariant,
    Score,
    VariantScores,
    ratio_bootstrap,
)

log = structlog.get_logger(__name__)


class EvalReportWriter(Protocol):
    """Writes a report (table, JSON, chart) into a directory; returns the written paths."""

    def write(self, report: EvalReport, out_dir: str) -> list[str]: ...


class EvaluateModels:
    """Score each variant on each task, in the given orders, and write the report."""

    def __init__(self, writer: EvalReportWriter) -> None:
        self._writer = writer

    def execute(
        self,
        variants: Sequence[ModelVariant],
        tasks: Sequence[EvaluationTask],
        out_dir: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> EvalReport:
        if not variants:
            raise ConfigError("nothing to evaluate: no model variants")
        if not tasks:
            raise ConfigError("nothing to evaluate: no tasks")
        results = []
        total = len(variants) * len(tasks)
        done = 0
        for variant in variants:
            scores: list[Score] = []
            for task in tasks:
                done += 1
                log.info("evaluating", variant=variant.name, task=task.name, step=f"{done}/{total}")
                found = task.evaluate(variant)
                scores.extend(found)
                log.info(
                    "evaluated",
                    variant=variant.name,
                    task=task.name,
                    scores={s.metric: round(s.value, 4) for s in found},
                )
            results.append(VariantScores(variant, tuple(scores)))
        report = EvalReport(tuple(results), dict(metadata or {}))
        if out_dir is not None:
            written = self._writer.write(report, out_dir)
            log.info("eval_report_written", files=written)
        return report


class HeldoutTask:
    """Loss and perplexity on encoded examples (a run's validation split with its own masks),
    token-weighted, with bootstrap intervals over examples; for a variant with a `reference`,
    the share of trained positions where both predict the same top-1 token."""

    def __init__(
        self,
        examples: Sequence[EncodedExample],
        scorer: SequenceScorer,
        *,
        name: str = "heldout",
        resamples: int = 1000,
        seed: int = 0,
    ) -> None:
        if not examples:
            raise ConfigError(f"{name}: no held-out examples to score")
        self._examples = tuple(examples)
        self._scorer = scorer
        self._name = name
        self._resamples = resamples
        self._seed = seed
        self._scored_by_name: dict[str, list[SequenceScore]] = {}  # variant names are unique

    @property
    def name(self) -> str:
        return self._name

    def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]:
        scored = self._scored(variant)
        nll = [s.nll for s in scored]
        tokens = [float(s.tokens) for s in scored]
        if sum(tokens) == 0:
            raise ConfigError(f"{self._name}: the examples have no trained tokens to score")
        loss, low, high, stderr = ratio_bootstrap(
            nll, tokens, resamples=self._resamples, seed=self._seed
        )
        n = len(scored)
        samples = tuple(zip(nll, tokens, strict=True))
        scores = [
            Score(self._name, "loss", loss, low, high, stderr, n, False, samples),
            Score(
                self._name,
                "perplexity",
                math.exp(loss),
                math.exp(low),
                math.exp(high),
                None,
                n,
                False,
                samples,
                exp_of_ratio=True,
            ),
        ]
        if variant.reference is not None:
            scores.append(self._agreement(variant, scored))
        return tuple(scores)

    def _scored(self, variant: ModelVariant) -> list[SequenceScore]:
        cached = self._scored_by_name.get(variant.name)
        if cached is not None:
            return cached
        scores = self._scorer.score(variant, self._examples, top1=True)
        if len(scores) != len(self._examples):
            raise ConfigError(f"{self._name}: the scorer returned {len(scores)} scores")
        self._scored_by_name[variant.name] = scores
        return scores

    def _agreement(self, variant: ModelVariant, scored: Sequence[SequenceScore]) -> Score:
        reference = variant.reference
        assert reference is not None
        theirs = self._scored(reference)
        same = [
            float(sum(a == b for a, b in zip(x.top1, y.top1, strict=True)))
            for x, y in zip(scored, theirs, strict=True)
        ]
        positions = [float(len(x.top1)) for x in scored]
        value, low, high, stderr = ratio_bootstrap(
            same, positions, resamples=self._resamples, seed=self._seed
        )
        return Score(
            self._name,
            f"top1_agreement_vs_{reference.name}",
            value,
            low,
            high,
            stderr,
            len(scored),
            samples=tuple(zip(same, positions, strict=True)),
        )
