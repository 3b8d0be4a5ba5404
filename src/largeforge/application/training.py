"""The `RunTraining` use case: resolve, prepare data, split, train, merge, record."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import structlog

from largeforge.application.data import PrepareDataset, enforce_policy, mix
from largeforge.application.ports import (
    Clock,
    EncoderFactory,
    ModelMerger,
    ModelResolver,
    ModelTrainer,
    RunStore,
)
from largeforge.domain.datasets import EncodedExample, PreferencePair, split_examples
from largeforge.domain.errors import DatasetError, LargeForgeError
from largeforge.domain.training import StepMetrics, TrainingPlan, TrainingRun
from largeforge.domain.validation import DatasetPolicyError

log = structlog.get_logger(__name__)

MAX_LOGGED_ISSUES = 20


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """A finished run and where it lives."""

    run: TrainingRun
    run_dir: str


class RunTraining:
    """Train an adapter from a plan, merge it, and record every step of the run.

    Data is read, validated and encoded with the model's tokenizer before the model is loaded,
    so a dataset that breaks the validation policy fails in seconds, with its report.
    """

    def __init__(
        self,
        *,
        resolver: ModelResolver,
        prepare: PrepareDataset,
        encoders: EncoderFactory,
        trainer: ModelTrainer,
        merger: ModelMerger,
        store: RunStore,
        clock: Clock,
    ) -> None:
        self._resolver = resolver
        self._prepare = prepare
        self._encoders = encoders
        self._trainer = trainer
        self._merger = merger
        self._store = store
        self._clock = clock

    def new_run_id(self) -> str:
        stamp = self._clock.now().strftime("%Y%m%d-%H%M%S")
        return f"run-{stamp}-{secrets.token_hex(2)}"

    def execute(
        self,
        plan: TrainingPlan,
        config: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> TrainingOutcome:
        """Run the plan to completion. Failures are recorded in the run, then re-raised."""
        run = TrainingRun(
            run_id=run_id or self.new_run_id(), plan=plan, created_at=self._clock.now()
        )
        run_dir = self._store.create(run, config or {})
        bound = log.bind(run_id=run.run_id, run_dir=run_dir)
        try:
            model_dir = self._resolver.resolve(plan.model)
            train, val = self._prepare_data(plan, model_dir, run.run_id)
            bound.info(
                "training_started",
                model=plan.model,
                train_examples=len(train),
                eval_examples=len(val),
                train_tokens=sum(e.length for e in train),
            )
            run = run.start(self._clock.now())
            self._store.save(run)

            def on_metrics(metrics: StepMetrics) -> None:
                self._store.append_metrics(run.run_id, metrics)

            result = self._trainer.train(plan, model_dir, train, val, run_dir, on_metrics)
            merged_dir = None
            if plan.merge:
                merged_dir = self._merger.merge(
                    model_dir, result.adapter_dir, str(PurePath(run_dir) / "merged")
                )
            run = run.succeed(self._clock.now(), result, merged_dir)
            self._store.save(run)
            bound.info(
                "training_succeeded",
                steps=result.steps,
                eval_loss_before=result.eval_loss_before,
                eval_loss_after=result.eval_loss_after,
                merged_dir=merged_dir,
            )
            return TrainingOutcome(run=run, run_dir=run_dir)
        except KeyboardInterrupt:
            self._store.save(run.interrupt(self._clock.now(), "interrupted by the user"))
            bound.warning("training_interrupted")
            raise
        except LargeForgeError as exc:
            self._store.save(run.fail(self._clock.now(), str(exc)))
            bound.error("training_failed", error=str(exc))
            raise
        except Exception as exc:
            self._store.save(run.fail(self._clock.now(), f"{type(exc).__name__}: {exc}"))
            bound.error("training_failed", error=repr(exc))
            raise

    def _prepare_data(
        self, plan: TrainingPlan, model_dir: str, run_id: str
    ) -> tuple[tuple[EncodedExample, ...], tuple[EncodedExample, ...]]:
        encoder = self._encoders.for_model(model_dir, plan.train_on)
        prepared = [
            self._prepare.execute(spec, plan.validation, encoder, plan.max_length)
            for spec in plan.datasets
        ]
        reports = [p.report.as_dict(max_issues=MAX_LOGGED_ISSUES) for p in prepared]
        self._store.write_json(run_id, "data_report.json", {"datasets": reports})
        for item in prepared:
            for issue in item.report.issues[:MAX_LOGGED_ISSUES]:
                log.warning("dataset_issue", issue=str(issue), kind=issue.kind)
        try:
            enforce_policy(prepared, plan.validation)
        except DatasetPolicyError:
            log.error("dataset_policy_failed", reports=reports)
            raise
        mixed = mix(prepared, plan.seed)
        if any(isinstance(record, PreferencePair) for record, _ in mixed):
            raise DatasetError(
                "preference pairs (prompt/chosen/rejected) train with DPO, not SFT; "
                "give SFT data (alpaca, sharegpt, messages, prompt/completion or text)"
            )
        encoded = tuple(e for _, e in mixed if e is not None)
        return split_examples(encoded, plan.val_size, plan.seed)
