"""What `largeforge eval REF` compares and on which tasks, decided before any model loads.

REF is a run directory (its base, adapter, merged and quantized models are found from the run)
or a model reference. Every `--compare` and `--tasks` entry is checked here, so a typo or a
missing variant is one clear error in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from largeforge.application.data import PrepareDataset, enforce_policy
from largeforge.application.evaluation import HeldoutTask
from largeforge.application.ports import (
    EncoderFactory,
    EvaluationTask,
    ModelResolver,
    SequenceScorer,
)
from largeforge.application.splits import encoded_units, prepare_run_data
from largeforge.application.training import units_fingerprint
from largeforge.domain.datasets import EncodedExample, PreferencePair
from largeforge.domain.errors import ConfigError
from largeforge.domain.evaluation import (
    RUN_VARIANTS,
    ModelVariant,
    TaskKind,
    TaskSpec,
    VariantKind,
    parse_task,
)
from largeforge.domain.formats import DatasetSpec
from largeforge.domain.training import TrainingRun
from largeforge.domain.validation import ValidationPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QuantizedModel:
    """A quantized model found in a run directory, and the model it was quantized from."""

    name: str
    path: str
    source: str | None = None


class RunFiles(Protocol):
    """What a run directory holds, read from disk."""

    def run_dir(self, ref: str) -> str | None:
        """The run directory REF names (a run directory or `runs/latest`), else None."""
        ...

    def load(self, run_dir: str) -> TrainingRun: ...

    def locate(self, run_dir: str, recorded: str) -> str | None:
        """A model directory the run recorded (as the path was when it trained, maybe relative
        to another working directory): that path, else its name inside `run_dir`, else None."""
        ...

    def quantized(self, run_dir: str) -> list[QuantizedModel]: ...


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a task factory may need: the run (if any) and the directory of the tokenizer the
    run trained with (the base model's)."""

    base_dir: str
    run_dir: str | None = None


TaskFactory = Callable[[TaskSpec, TaskContext], EvaluationTask]


@dataclass(frozen=True, slots=True)
class EvalPlan:
    variants: tuple[ModelVariant, ...]
    tasks: tuple[EvaluationTask, ...]
    run_dir: str | None
    run: TrainingRun | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)


class PlanEvaluation:
    """Turns `REF`, `--tasks` and `--compare` into variants and ready tasks."""

    def __init__(
        self,
        *,
        resolver: ModelResolver,
        runs: RunFiles,
        prepare: PrepareDataset,
        encoders: EncoderFactory,
        scorer: SequenceScorer,
        factories: Mapping[TaskKind, TaskFactory],
    ) -> None:
        self._resolver = resolver
        self._runs = runs
        self._prepare = prepare
        self._encoders = encoders
        self._scorer = scorer
        self._factories = factories

    def plan(self, ref: str, tasks: Sequence[str] = (), compare: Sequence[str] = ()) -> EvalPlan:
        specs = [parse_task(t) for t in tasks] or [TaskSpec(TaskKind.HELDOUT)]
        run_dir = self._runs.run_dir(ref)
        if run_dir is None:
            return self._plan_model(ref, specs, compare)
        run = self._runs.load(run_dir)
        base_dir = self._resolver.resolve(run.plan.model)
        variants = self.run_variants(run, run_dir, base_dir, compare)
        context = TaskContext(base_dir=base_dir, run_dir=run_dir)
        built = tuple(self._task(spec, context, run) for spec in specs)
        metadata = {"ref": ref, "run_id": run.run_id, "run_dir": run_dir, "base": run.plan.model}
        return EvalPlan(variants, built, run_dir, run, metadata)

    def _plan_model(self, ref: str, specs: list[TaskSpec], compare: Sequence[str]) -> EvalPlan:
        model_dir = self._resolver.resolve(ref)
        name = ref.rstrip("/").rsplit("/", 1)[-1] or ref
        variants = [ModelVariant(name, VariantKind.MODEL, model_dir)]
        for entry in compare:
            if "=" not in entry:
                raise ConfigError(
                    f"--compare {entry}: {ref} is not a run directory, so compare NAME=MODEL "
                    "entries (base, adapter, merged and quantized are a run's)"
                )
            variants.append(self._named(entry))
        _check_unique(variants)
        context = TaskContext(base_dir=model_dir)
        built = tuple(self._task(spec, context, None) for spec in specs)
        return EvalPlan(tuple(variants), built, None, None, {"ref": ref})

    def run_variants(
        self, run: TrainingRun, run_dir: str, base_dir: str, compare: Sequence[str] = ()
    ) -> tuple[ModelVariant, ...]:
        """The run's variants `compare` names (default: every one the run has), in the order
        base, adapter, merged, quantized."""
        found = self._available(run, run_dir, base_dir)
        if not compare:
            return tuple(v for group in found.values() for v in group)
        chosen: list[ModelVariant] = []
        for entry in compare:
            if "=" in entry:
                chosen.append(self._named(entry))
                continue
            group = found.get(entry)
            if group is None:
                quantized = [v for v in found["quantized"] if v.name == entry]
                if not quantized:
                    kinds = ", ".join(k.value for k in RUN_VARIANTS)
                    names = [v.name for v in found["quantized"]]
                    raise ConfigError(
                        f"--compare {entry}: not a variant of a run (use {kinds}"
                        + (f", {', '.join(names)}" if names else "")
                        + ", or NAME=MODEL)"
                    )
                group = quantized
            if not group:
                raise ConfigError(f"--compare {entry}: {_missing(entry, run, run_dir)}")
            chosen.extend(group)
        _check_unique(chosen)
        return tuple(chosen)

    def _available(
        self, run: TrainingRun, run_dir: str, base_dir: str
    ) -> dict[str, list[ModelVariant]]:
        base = ModelVariant("base", VariantKind.BASE, base_dir)
        found: dict[str, list[ModelVariant]] = {k.value: [] for k in RUN_VARIANTS}
        found["base"].append(base)
        recorded = run.result.adapter_dir if run.result else None
        adapter_dir = self._runs.locate(run_dir, recorded) if recorded else None
        whole = run.plan.adapter.writes_whole_model
        if adapter_dir and not whole:
            found["adapter"].append(
                ModelVariant("adapter", VariantKind.ADAPTER, base_dir, adapter_dir)
            )
        merged_dir = self._runs.locate(run_dir, run.merged_dir) if run.merged_dir else None
        merged_dir = merged_dir or (adapter_dir if whole else None)
        merged = None
        if merged_dir:
            merged = ModelVariant("merged", VariantKind.MERGED, merged_dir)
            found["merged"].append(merged)
        for item in self._runs.quantized(run_dir):
            reference = merged or base
            if item.source is not None and _same_path(item.source, base_dir):
                reference = base
            found["quantized"].append(
                ModelVariant(item.name, VariantKind.QUANTIZED, item.path, reference=reference)
            )
        return found

    def _named(self, entry: str) -> ModelVariant:
        name, _, ref = entry.partition("=")
        name, ref = name.strip(), ref.strip()
        if not name or not ref:
            raise ConfigError(f"--compare {entry!r}: write NAME=MODEL")
        return ModelVariant(name, VariantKind.MODEL, self._resolver.resolve(ref))

    def _task(
        self, spec: TaskSpec, context: TaskContext, run: TrainingRun | None
    ) -> EvaluationTask:
        if spec.kind is TaskKind.HELDOUT:
            return self._heldout(spec, context, run)
        factory = self._factories.get(spec.kind)
        if factory is None:
            raise ConfigError(f"--tasks {spec.label}: no {spec.kind.value} tasks in this install")
        return factory(spec, context)

    def _heldout(
        self, spec: TaskSpec, context: TaskContext, run: TrainingRun | None
    ) -> EvaluationTask:
        """The run's eval split with its masks, or every row of a dataset file."""
        if spec.argument is None:
            if run is None:
                raise ConfigError(
                    "--tasks heldout: a model reference has no eval split; give a dataset "
                    "file (heldout:FILE) or a run directory"
                )
            return HeldoutTask(self._run_heldout(run, context.base_dir), self._scorer)
        plan_on = run.plan.train_on if run else "all"
        encoder = self._encoders.for_model(context.base_dir, plan_on)
        prepared = self._prepare.execute(
            DatasetSpec(source=spec.argument),
            run.plan.validation if run else ValidationPolicy(),
            encoder,
            run.plan.max_length if run else None,
        )
        enforce_policy([prepared], run.plan.validation if run else ValidationPolicy())
        examples = [e for e in prepared.encoded if e is not None]
        pairs = tuple(r for r in prepared.records if isinstance(r, PreferencePair))
        if pairs:
            examples += encoded_units(pairs, self._encoders, plan_on, context.base_dir)
        if not examples:
            raise ConfigError(f"--tasks {spec.label}: no usable rows in {spec.argument}")
        return HeldoutTask(examples, self._scorer, name=spec.label)

    def _run_heldout(self, run: TrainingRun, base_dir: str) -> list[EncodedExample]:
        plan = run.plan
        if plan.val_size <= 0:
            raise ConfigError(
                f"run {run.run_id} kept no eval split (training.val_size 0); give a dataset "
                "file: --tasks heldout:FILE"
            )
        data = prepare_run_data(self._prepare, self._encoders, plan, base_dir)
        if run.data_fingerprint and units_fingerprint(data.train + data.val) != (
            run.data_fingerprint
        ):
            log.warning(
                "heldout_data_changed",
                run_id=run.run_id,
                reason="the run's datasets prepare differently than when it trained; the "
                "eval split may not be the one training held out",
            )
        return encoded_units(data.val, self._encoders, plan.train_on, base_dir)


def _same_path(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _missing(entry: str, run: TrainingRun, run_dir: str) -> str:
    if entry == "adapter":
        return f"run {run.run_id} has no adapter (full fine-tuning writes a whole model)"
    if entry == "merged":
        return f"run {run.run_id} has no merged model (make one: largeforge merge {run_dir})"
    if entry == "quantized":
        return (
            f"run {run.run_id} has no quantized model (make one: largeforge quantize "
            f"{run_dir}/merged)"
        )
    return f"run {run.run_id} has no {entry}"


def _check_unique(variants: Sequence[ModelVariant]) -> None:
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"--compare names {', '.join(duplicates)} more than once")
