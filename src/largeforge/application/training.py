"""The `RunTraining` use case: resolve, read, split, train, merge, record."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import structlog

from largeforge.application.ports import (
    Clock,
    DatasetReader,
    ModelMerger,
    ModelResolver,
    ModelTrainer,
    RunStore,
)
from largeforge.domain.datasets import split_examples
from largeforge.domain.errors import DatasetError, LargeForgeError
from largeforge.domain.training import StepMetrics, TrainingPlan, TrainingRun

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """A finished run and where it lives."""

    run: TrainingRun
    run_dir: str


class RunTraining:
    """Train an adapter from a plan, merge it, and record every step of the run."""

    def __init__(
        self,
        *,
        resolver: ModelResolver,
        reader: DatasetReader,
        trainer: ModelTrainer,
        merger: ModelMerger,
        store: RunStore,
        clock: Clock,
    ) -> None:
        self._resolver = resolver
        self._reader = reader
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
            data = self._reader.read(plan.dataset)
            for issue in data.issues:
                bound.warning("dataset_issue", issue=str(issue))
            if not data.examples:
                raise DatasetError(f"{plan.dataset}: no usable rows ({len(data.issues)} skipped)")
            train, val = split_examples(data.examples, plan.val_size, plan.seed)
            bound.info(
                "training_started",
                model=plan.model,
                dataset=plan.dataset,
                format=data.format,
                train_examples=len(train),
                eval_examples=len(val),
                skipped_rows=len(data.issues),
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
