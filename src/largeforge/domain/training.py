"""Training plans, LoRA settings, and the `TrainingRun` state machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, TypeVar

from largeforge.domain.datasets import (
    EncodedExample,
    LabeledCompletion,
    PreferencePair,
    PromptExample,
)
from largeforge.domain.errors import InvalidTransitionError
from largeforge.domain.formats import DatasetSpec
from largeforge.domain.method_options import GrpoOptions, KtoOptions, OrpoOptions, SimpoOptions
from largeforge.domain.validation import ValidationPolicy

_E = TypeVar("_E", bound=StrEnum)

TrainingUnit = EncodedExample | PreferencePair | LabeledCompletion | PromptExample
"""What a trainer consumes: an encoded conversation (SFT), a preference pair (DPO, ORPO,
SimPO), a labelled completion (KTO) or a prompt (GRPO)."""


class UnitKind(StrEnum):
    """The training units a method consumes."""

    CONVERSATIONS = "conversations"
    PAIRS = "pairs"
    LABELED = "labeled completions"
    PROMPTS = "prompts"


class TrainingMethod(StrEnum):
    """How a run trains; each method has one trainer adapter (the container maps them)."""

    SFT = "sft"  # supervised fine-tuning on conversations
    DPO = "dpo"  # direct preference optimisation on prompt/chosen/rejected pairs
    KTO = "kto"  # Kahneman-Tversky optimisation on completions labelled desirable or not
    ORPO = "orpo"  # odds-ratio preference optimisation (SFT + preference, no reference)
    SIMPO = "simpo"  # simple preference optimisation (length-normalised, no reference)
    GRPO = "grpo"  # group relative policy optimisation on prompts with verifiable rewards

    @property
    def unit_kind(self) -> UnitKind:
        """What the method trains on."""
        if self in (TrainingMethod.DPO, TrainingMethod.ORPO, TrainingMethod.SIMPO):
            return UnitKind.PAIRS
        if self is TrainingMethod.KTO:
            return UnitKind.LABELED
        if self is TrainingMethod.GRPO:
            return UnitKind.PROMPTS
        return UnitKind.CONVERSATIONS

    @property
    def can_pack(self) -> bool:
        """Whether samples may be packed into rows (`training.packing`)."""
        return self is TrainingMethod.SFT


class AdapterKind(StrEnum):
    """What a run trains: a LoRA adapter, LoRA on a 4-bit base (CUDA), or every weight."""

    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"

    @property
    def writes_whole_model(self) -> bool:
        """Full fine-tuning writes a standalone model; the others an adapter to merge."""
        return self is AdapterKind.FULL

    @property
    def quantized_base(self) -> bool:
        return self is AdapterKind.QLORA


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")

PRECISIONS = ("auto", "fp32", "bf16")
"""`training.precision`: auto (bf16 where the device computes it fast, else its own dtype),
fp32 everywhere, or bf16 (refused by the trainer on a device without bf16)."""


@dataclass(frozen=True, slots=True)
class DpoOptions:
    """The `dpo:` option group: only DPO runs read it."""

    beta: float = 0.1  # strength of the KL penalty to the reference
    loss_type: str = "sigmoid"  # sigmoid (DPO), ipo or hinge
    precompute_ref_log_probs: bool = False

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"dpo beta must be positive, got {self.beta}")
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(
                f"dpo loss_type must be one of {', '.join(DPO_LOSS_TYPES)}, got {self.loss_type!r}"
            )


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """Low-rank adapter settings. `target_modules=("all-linear",)` adapts every linear layer."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("all-linear",)
    use_dora: bool = False  # weight-decomposed LoRA

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoRA needs at least one target module")


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """Everything a trainer needs to know, as plain values."""

    model: str
    datasets: tuple[DatasetSpec, ...]
    lora: LoraSpec = field(default_factory=LoraSpec)
    validation: ValidationPolicy = field(default_factory=ValidationPolicy)
    train_on: str = "all"
    # Pack short samples into max_length rows (no cross-attention); "auto": see `decide_packing`.
    packing: bool | Literal["auto"] = "auto"
    # Training dtype: "auto" (bf16 where the device computes bf16 fast), "fp32" or "bf16".
    precision: str = "auto"
    tensorboard: bool = False  # also write TensorBoard event files in the run directory
    save_steps: int = 10  # checkpoint every N optimizer steps (0: never)
    eval_steps: int = 0  # evaluate every N steps (0: only before and after training)
    early_stopping_patience: int = 0  # evaluations without improvement before stopping (0: off)
    keep_checkpoints: int = 2
    method: TrainingMethod = TrainingMethod.SFT
    adapter: AdapterKind = AdapterKind.LORA
    dpo: DpoOptions = field(default_factory=DpoOptions)
    kto: KtoOptions = field(default_factory=KtoOptions)
    orpo: OrpoOptions = field(default_factory=OrpoOptions)
    simpo: SimpoOptions = field(default_factory=SimpoOptions)
    grpo: GrpoOptions = field(default_factory=GrpoOptions)
    max_steps: int = 30
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    warmup_steps: int = 5
    max_length: int = 256
    val_size: float = 0.1
    logging_steps: int = 5
    seed: int = 42
    merge: bool = True

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("a training plan needs at least one dataset")
        # Plain strings (older run.json files, callers) become the enums, or a clear error.
        object.__setattr__(self, "method", _member(TrainingMethod, self.method, "method"))
        object.__setattr__(self, "adapter", _member(AdapterKind, self.adapter, "adapter"))
        if self.early_stopping_patience and not (
            self.eval_steps and self.save_steps and self.save_steps % self.eval_steps == 0
        ):
            raise ValueError(
                "early stopping needs eval_steps > 0 and save_steps a multiple of eval_steps "
                "(the best checkpoint is kept)"
            )
        if self.save_steps < 0 or self.keep_checkpoints < 1:
            raise ValueError("save_steps must be >= 0 and keep_checkpoints >= 1")
        if self.train_on not in {"all", "last"}:
            raise ValueError(f"train_on must be 'all' or 'last', got {self.train_on!r}")
        if self.batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            raise ValueError("batch size and gradient accumulation must be positive")
        if not 0.0 <= self.val_size < 1.0:
            raise ValueError(f"val_size must be in [0, 1), got {self.val_size}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be at least 16, got {self.max_length}")
        if self.packing not in (True, False, "auto"):
            raise ValueError(f"packing must be true, false or 'auto', got {self.packing!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.packing is True and not self.method.can_pack:
            raise ValueError(
                f"packing applies to SFT only: set packing to false or 'auto' for {self.method}"
            )
        self._check_method_options()

    def _check_method_options(self) -> None:
        """What the chosen method needs of the other settings."""
        kto_kl = self.method is TrainingMethod.KTO and self.kto.loss_type == "kto"
        if kto_kl and self.batch_size < 2:
            raise ValueError(
                "training.batch_size: KTO estimates its KL term from the other rows of a "
                "batch; use a batch size of at least 2"
            )
        if self.method is TrainingMethod.GRPO:
            if not self.grpo.rewards:
                raise ValueError(
                    "grpo.rewards: GRPO needs at least one reward (format, exact_answer, "
                    "numeric_answer, json_schema, length_penalty or python)"
                )
            completions = self.batch_size * self.gradient_accumulation_steps
            if completions % self.grpo.num_generations:
                raise ValueError(
                    f"training.batch_size: batch_size x gradient_accumulation_steps "
                    f"({completions} completions a step) must be a multiple of "
                    f"grpo.num_generations ({self.grpo.num_generations})"
                )

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps


def _member(kind: type[_E], value: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in kind)
        raise ValueError(f"{what} must be one of {valid}, got {value!r}") from None


PACK_BELOW = 0.25
"""`packing: auto` packs when the median sample is at most this share of `max_length`."""


@dataclass(frozen=True, slots=True)
class PackingDecision:
    """Whether an SFT run packs its samples, and why (logged at the start of training)."""

    pack: bool
    reason: str


def decide_packing(
    setting: bool | Literal["auto"], lengths: Sequence[int], max_length: int, accelerator: bool
) -> PackingDecision:
    """Resolve `packing` for the encoded sample `lengths` on a device with or without an
    accelerator. `auto` packs short samples on accelerators only, which small batches of short
    rows leave idle. On a CPU, forced packing is no longer slower per real token than unpacked
    length-grouped batches (benchmarks/packing.py: length-grouped attention, output layer only
    at trained positions), but a packed step holds several times the samples of an unpacked
    one, so `auto` keeps CPU runs unpacked and their step counts as they were; `true` packs.
    """
    if isinstance(setting, bool):
        return PackingDecision(setting, f"packing: {str(setting).lower()} in the run file")
    if setting != "auto":
        raise ValueError(f"packing must be true, false or 'auto', got {setting!r}")
    if not lengths:
        return PackingDecision(False, "auto: no samples")
    median = sorted(lengths)[len(lengths) // 2]
    if median > PACK_BELOW * max_length:
        return PackingDecision(
            False, f"auto: median sample of {median} tokens is over a quarter of {max_length}"
        )
    if not accelerator:
        return PackingDecision(
            False, "auto: CPU runs stay unpacked (batches group lengths); packing: true packs"
        )
    return PackingDecision(
        True, f"auto: median sample of {median} tokens fits {max_length // median}x per row"
    )


class RunState(StrEnum):
    """Lifecycle of a training run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.INTERRUPTED}),
    RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.INTERRUPTED}),
    RunState.INTERRUPTED: frozenset({RunState.RUNNING, RunState.FAILED}),
    RunState.FAILED: frozenset(),
    RunState.SUCCEEDED: frozenset(),
}


def allowed_transitions(state: RunState) -> frozenset[RunState]:
    """The states a run in `state` may move to."""
    return _TRANSITIONS[state]


@dataclass(frozen=True, slots=True)
class StepMetrics:
    """One logged training step."""

    step: int
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eval_loss: float | None = None
    epoch: float | None = None
    grad_norm: float | None = None
    reward_margin: float | None = None
    reward_accuracy: float | None = None
    eval_reward_margin: float | None = None
    peak_memory_mb: float | None = None
    mfu: float | None = None
    trainable_tokens: int | None = None  # cumulative label tokens that carried loss
    kl: float | None = None  # KL to the reference (KTO, GRPO)
    reward: float | None = None  # GRPO: mean weighted reward of the step's completions
    reward_std: float | None = None  # GRPO: its spread
    eval_reward: float | None = None  # GRPO: mean reward on the eval prompts
    eval_reward_std: float | None = None
    # GRPO: each reward's mean (and eval mean) by label, as (label, mean) pairs
    rewards: tuple[tuple[str, float], ...] = ()
    eval_rewards: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, float | int]:
        """The fields that were measured (None fields are left out)."""
        items = {
            "step": self.step,
            "loss": self.loss,
            "learning_rate": self.learning_rate,
            "tokens_per_second": self.tokens_per_second,
            "eval_loss": self.eval_loss,
            "epoch": self.epoch,
            "grad_norm": self.grad_norm,
            "reward_margin": self.reward_margin,
            "reward_accuracy": self.reward_accuracy,
            "eval_reward_margin": self.eval_reward_margin,
            "peak_memory_mb": self.peak_memory_mb,
            "mfu": self.mfu,
            "trainable_tokens": self.trainable_tokens,
            "kl": self.kl,
            "reward": self.reward,
            "reward_std": self.reward_std,
            "eval_reward": self.eval_reward,
            "eval_reward_std": self.eval_reward_std,
        }
        items |= {f"reward/{label}": value for label, value in self.rewards}
        items |= {f"eval_reward/{label}": value for label, value in self.eval_rewards}
        return {k: v for k, v in items.items() if v is not None}


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What a trainer hands back."""

    adapter_dir: str
    steps: int
    train_loss: float | None
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_examples: int
    eval_examples: int
    eval_reward_margin_before: float | None = None
    eval_reward_margin_after: float | None = None
    eval_reward_before: float | None = None  # GRPO: mean reward on the eval prompts
    eval_reward_after: float | None = None


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """A training run and its history. Transitions return a new run; illegal ones raise."""

    run_id: str
    plan: TrainingPlan
    state: RunState = RunState.PENDING
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: TrainingResult | None = None
    merged_dir: str | None = None
    history: tuple[tuple[RunState, datetime], ...] = ()
    config_fingerprint: str = ""
    data_fingerprint: str = ""
    resumes: int = 0

    def _move(self, target: RunState, at: datetime) -> TrainingRun:
        if target not in _TRANSITIONS[self.state]:
            raise InvalidTransitionError(
                f"run {self.run_id}: cannot go from {self.state.value} to {target.value}"
            )
        return replace(self, state=target, history=(*self.history, (target, at)))

    def start(self, at: datetime) -> TrainingRun:
        run = self._move(RunState.RUNNING, at)
        resumes = self.resumes + (1 if self.state is RunState.INTERRUPTED else 0)
        return replace(run, started_at=self.started_at or at, error=None, resumes=resumes)

    def succeed(self, at: datetime, result: TrainingResult, merged_dir: str | None) -> TrainingRun:
        run = self._move(RunState.SUCCEEDED, at)
        return replace(run, finished_at=at, result=result, merged_dir=merged_dir)

    def fail(self, at: datetime, error: str) -> TrainingRun:
        return replace(self._move(RunState.FAILED, at), finished_at=at, error=error)

    def interrupt(self, at: datetime, reason: str = "interrupted") -> TrainingRun:
        return replace(self._move(RunState.INTERRUPTED, at), error=reason)

    @property
    def is_terminal(self) -> bool:
        return not _TRANSITIONS[self.state]

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
