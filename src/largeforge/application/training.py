"""The `RunTraining` use case: resolve, prepare data, split, train, merge, record."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import PurePath
from typing import Any

import structlog

from largeforge.application.data import PrepareDataset
from largeforge.application.fidelity import log_static_check, static_check
from largeforge.application.ports import (
    Clock,
    EncoderFactory,
    ModelMerger,
    ModelResolver,
    ModelTrainer,
    RunStore,
    TokenizerFactsReader,
)
from largeforge.application.splits import prepare_run_data
from largeforge.domain.datasets import (
    EncodedExample,
    LabeledCompletion,
    PreferencePair,
)
from largeforge.domain.errors import ConfigError, LargeForgeError
from largeforge.domain.fidelity import FidelityReport, TokenizerFacts
from largeforge.domain.training import (
    RunState,
    StepMetrics,
    TrainingMethod,
    TrainingPlan,
    TrainingRun,
    TrainingUnit,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """A finished run and where it lives."""

    run: TrainingRun
    run_dir: str


class ResumeRefusedError(ConfigError):
    """A resume would continue with different data or settings than the run started with."""


def plan_fingerprint(plan: TrainingPlan) -> str:
    """A stable hash of everything in the plan that shapes training."""
    data = asdict(plan)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def units_fingerprint(units: tuple[TrainingUnit, ...]) -> str:
    """A stable hash of the prepared training data (tokens and masks, or pair texts)."""
    digest = hashlib.sha256()
    for unit in units:
        if isinstance(unit, EncodedExample):
            digest.update(repr((unit.input_ids, unit.trainable)).encode())
        elif isinstance(unit, PreferencePair):
            digest.update(repr((unit.prompt, unit.chosen, unit.rejected)).encode())
        elif isinstance(unit, LabeledCompletion):
            digest.update(repr((unit.prompt, unit.completion, unit.label)).encode())
        else:
            digest.update(repr((unit.prompt, unit.reference, unit.metadata)).encode())
    return digest.hexdigest()[:16]


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
        trainers: Mapping[TrainingMethod, ModelTrainer],
        merger: ModelMerger,
        store: RunStore,
        clock: Clock,
        facts: TokenizerFactsReader,
    ) -> None:
        self._resolver = resolver
        self._prepare = prepare
        self._encoders = encoders
        self._trainers = trainers
        self._merger = merger
        self._store = store
        self._clock = clock
        self._facts = facts

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
        self._check(plan)
        run = TrainingRun(
            run_id=run_id or self.new_run_id(),
            plan=plan,
            created_at=self._clock.now(),
            config_fingerprint=plan_fingerprint(plan),
        )
        run_dir = self._store.create(run, config or {})
        return self._run(run, run_dir, resume=False, force=False)

    def resume(self, run_id: str, plan: TrainingPlan, *, force: bool = False) -> TrainingOutcome:
        """Continue an interrupted (or crashed) run from its latest complete checkpoint.

        Refuses when the plan or the prepared data differ from the original run's, unless
        `force`.
        """
        self._check(plan)
        run = self._store.load(run_id)
        if run.state is RunState.SUCCEEDED:
            raise ConfigError(f"run {run_id} already succeeded; nothing to resume")
        if run.state is RunState.FAILED:
            raise ConfigError(f"run {run_id} failed ({run.error}); start a new run instead")
        if run.state in (RunState.RUNNING, RunState.PENDING):  # the process died without a word
            run = run.interrupt(self._clock.now(), "the training process ended unexpectedly")
            self._store.save(run)
        fingerprint = plan_fingerprint(plan)
        if fingerprint != run.config_fingerprint and not force:
            raise ResumeRefusedError(
                f"run {run_id}: the configuration changed since the run started "
                "(resume with the same config, or pass --force)"
            )
        run = replace(run, plan=plan, config_fingerprint=fingerprint)
        return self._run(run, self._store.run_dir(run_id), resume=True, force=force)

    def _trainer_for(self, plan: TrainingPlan) -> ModelTrainer:
        trainer = self._trainers.get(plan.method)
        if trainer is None:
            valid = ", ".join(sorted(m.value for m in self._trainers))
            raise ConfigError(f"no trainer for method '{plan.method}'; available: {valid}")
        return trainer

    def _check(self, plan: TrainingPlan) -> None:
        """The method has a trainer, and the trainer takes the plan (before data or model)."""
        self._trainer_for(plan).check_plan(plan)

    def _run(self, run: TrainingRun, run_dir: str, *, resume: bool, force: bool) -> TrainingOutcome:
        plan = run.plan
        bound = log.bind(run_id=run.run_id, run_dir=run_dir)
        try:
            model_dir = self._resolver.resolve(plan.model)
            train, val = self._prepare_data(plan, model_dir, run.run_id)
            trained_facts = self._record_facts(run.run_id, model_dir)
            data_fingerprint = units_fingerprint(train + val)
            if resume and data_fingerprint != run.data_fingerprint and not force:
                raise ResumeRefusedError(
                    f"run {run.run_id}: the training data changed since the run started "
                    "(resume with the same data, or pass --force)"
                )
            bound.info(
                "training_resumed" if resume else "training_started",
                model=plan.model,
                method=plan.method.value,
                adapter=plan.adapter.value,
                train_examples=len(train),
                eval_examples=len(val),
            )
            run = replace(run.start(self._clock.now()), data_fingerprint=data_fingerprint)
            self._store.save(run)

            def on_metrics(metrics: StepMetrics) -> None:
                self._store.append_metrics(run.run_id, metrics)

            result = self._trainer_for(plan).train(
                plan, model_dir, train, val, run_dir, on_metrics, resume=resume
            )
            merged_dir = None
            if plan.adapter.writes_whole_model:
                merged_dir = result.adapter_dir  # full fine-tuning writes a whole model
            elif plan.merge:
                merged_dir = self._merger.merge(
                    model_dir, result.adapter_dir, str(PurePath(run_dir) / "merged")
                )
            if merged_dir is not None and trained_facts is not None:
                self._check_fidelity(run.run_id, merged_dir, trained_facts)
            run = run.succeed(self._clock.now(), result, merged_dir)
            self._store.save(run)
            self._store.write_report(run)
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
        except ResumeRefusedError:
            raise  # the run stays interrupted: nothing was tried
        except LargeForgeError as exc:
            self._store.save(run.fail(self._clock.now(), str(exc)))
            bound.error("training_failed", error=str(exc))
            raise
        except Exception as exc:
            self._store.save(run.fail(self._clock.now(), f"{type(exc).__name__}: {exc}"))
            bound.error("training_failed", error=repr(exc))
            raise

    def _record_facts(self, run_id: str, model_dir: str) -> TokenizerFacts | None:
        """Record the facts of the tokenizer training uses (its template, special tokens, EOS
        and generation config) in tokenizer_facts.json, for fidelity checks of what the run
        serves later. A tokenizer whose facts cannot be read leaves no record; it fails
        nothing (the training data was already encoded with it)."""
        try:
            facts = self._facts.read(model_dir)
        except LargeForgeError as exc:
            log.warning("tokenizer_facts_not_recorded", run_id=run_id, error=str(exc))
            return None
        self._store.write_json(run_id, "tokenizer_facts.json", facts.to_dict())
        return facts

    def _check_fidelity(self, run_id: str, merged_dir: str, trained: TokenizerFacts) -> None:
        """Compare the merged model's tokenizer, template and generation config with what
        training used; log the result and write it to fidelity.json. A mismatch is a warning,
        not a failed run (`largeforge eval --fidelity` exits 1 on it)."""
        try:
            check = static_check(self._facts, merged_dir, trained)
        except LargeForgeError as exc:
            log.warning("fidelity_check_failed", run_id=run_id, error=str(exc))
            return
        self._store.write_json(run_id, "fidelity.json", FidelityReport((check,)).to_dict())
        log_static_check(check, run_id=run_id)

    def _prepare_data(
        self, plan: TrainingPlan, model_dir: str, run_id: str
    ) -> tuple[tuple[TrainingUnit, ...], tuple[TrainingUnit, ...]]:
        """Validated training units: preference pairs for methods that train on pairs (DPO),
        encoded conversations for the others (SFT)."""

        def write_reports(reports: list[dict[str, Any]]) -> None:
            self._store.write_json(run_id, "data_report.json", {"datasets": reports})

        data = prepare_run_data(self._prepare, self._encoders, plan, model_dir, write_reports)
        train, val = data.train, data.val
        if len(train) < plan.batch_size:
            raise ConfigError(
                f"training.batch_size {plan.batch_size} is larger than the {len(train)} training "
                "examples; lower it or add data"
            )
        return train, val
