"""Settings: pydantic models of the run file (YAML) and of `serve`, with one-line errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from largeforge.domain.errors import ConfigError
from largeforge.domain.evaluation import parse_task
from largeforge.domain.formats import DatasetFormat, DatasetSpec
from largeforge.domain.method_options import GrpoOptions, KtoOptions, OrpoOptions, SimpoOptions
from largeforge.domain.rewards import reward_specs
from largeforge.domain.training import (
    AdapterKind,
    DpoOptions,
    LoraSpec,
    TrainingMethod,
    TrainingPlan,
)
from largeforge.domain.validation import Dedupe, OnError, TooLong, ValidationPolicy

DEFAULT_MODEL = "smollm2-135m-instruct"
M = TypeVar("M", bound=BaseModel)
DEFAULT_DATASET = "sample"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Strict):
    """LoRA adapter settings (`lora:` in the run file)."""

    rank: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1)
    dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")


FormatName = Literal[
    "alpaca",
    "sharegpt",
    "messages",
    "prompt_completion",
    "preference",
    "unpaired",
    "text",
    "prompt",
]


class DatasetSettings(_Strict):
    """One dataset: a file (.jsonl, .json, .parquet, .csv), a `save_to_disk` directory, a hub
    id, or `sample` (bundled)."""

    path: str
    format: FormatName | None = Field(None, description="default: detected from the rows")
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical field -> column name in this file"
    )
    weight: float | None = Field(None, gt=0, description="share when mixing several datasets")
    count: int | None = Field(None, gt=0, description="rows to take when mixing")

    def to_spec(self) -> DatasetSpec:
        return DatasetSpec(
            source=self.path,
            format=DatasetFormat(self.format) if self.format else None,
            columns=tuple(sorted(self.columns.items())),
            weight=self.weight,
            count=self.count,
        )


class ValidationSettings(_Strict):
    """What bad rows cost (`validation:` in the run file)."""

    on_error: Literal["skip", "fail"] = "skip"
    max_skip_fraction: float = Field(0.05, ge=0.0, le=1.0)
    dedupe: Literal["none", "exact", "normalized"] = "exact"
    too_long: Literal["skip", "truncate"] = "skip"
    clean_text: bool = True
    require_tool_results: bool = True
    """A tool call must be answered by a `tool` message before the next user turn."""

    def to_policy(self) -> ValidationPolicy:
        return ValidationPolicy(
            on_error=OnError(self.on_error),
            max_skip_fraction=self.max_skip_fraction,
            dedupe=Dedupe(self.dedupe),
            too_long=TooLong(self.too_long),
            clean_text=self.clean_text,
            require_tool_results=self.require_tool_results,
        )


class DpoSettings(_Strict):
    """DPO's option group (`dpo:` in the run file; read only when `method: dpo`)."""

    beta: float = Field(0.1, gt=0, description="strength of the KL penalty to the reference")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid (the DPO paper's), ipo or hinge"
    )
    precompute_ref_log_probs: bool = Field(
        False, description="score the reference once before training (faster steps)"
    )

    def to_options(self) -> DpoOptions:
        return DpoOptions(
            beta=self.beta,
            loss_type=self.loss_type,
            precompute_ref_log_probs=self.precompute_ref_log_probs,
        )


class KtoSettings(_Strict):
    """KTO's option group (`kto:`; read only when `method: kto`)."""

    beta: float = Field(0.1, gt=0, description="strength of the KL penalty to the reference")
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    desirable_weight: float = Field(1.0, gt=0, description="weight of desirable completions")
    undesirable_weight: float = Field(1.0, gt=0, description="weight of undesirable ones")

    def to_options(self) -> KtoOptions:
        return KtoOptions(**self.model_dump())


class OrpoSettings(_Strict):
    """ORPO's option group (`orpo:`; read only when `method: orpo`)."""

    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term (the paper's lambda)")

    def to_options(self) -> OrpoOptions:
        return OrpoOptions(**self.model_dump())


class SimpoSettings(_Strict):
    """SimPO's option group (`simpo:`; read only when `method: simpo`)."""

    beta: float = Field(2.0, gt=0, description="scale of the length-normalised margin")
    gamma_beta_ratio: float = Field(0.5, ge=0, description="target margin over beta")
    sft_weight: float = Field(0.0, ge=0, description="SFT loss on the chosen answer (CPO alpha)")

    def to_options(self) -> SimpoOptions:
        return SimpoOptions(**self.model_dump())


class GrpoSettings(_Strict):
    """GRPO's option group (`grpo:`; read only when `method: grpo`)."""

    rewards: list[Any] = Field(
        default_factory=list,
        description="reward functions: {kind: format|exact_answer|numeric_answer|json_schema|"
        "length_penalty, ...options, weight} or {kind: python, function: module:function}",
    )
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt")
    max_completion_length: int = Field(64, gt=0, description="tokens per completion")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0, description="KL coefficient (0: no reference model)")
    epsilon: float = Field(0.2, gt=0, description="clipping of the policy ratio")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide advantages by the group's reward std, the batch's, or not"
    )

    def to_options(self) -> GrpoOptions:
        data = self.model_dump()
        raw = data.pop("rewards")
        rewards = reward_specs(raw, "grpo.rewards") if raw else ()
        return GrpoOptions(rewards=rewards, **data)


class TrainingSettings(_Strict):
    """Optimisation settings (`training:` in the run file)."""

    max_steps: int = Field(30, description="optimizer steps; 0 or less means use `epochs`")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    max_length: int = Field(256, ge=16)
    val_size: float = Field(0.1, ge=0.0, lt=1.0)
    logging_steps: int = Field(5, gt=0)
    packing: Literal["auto", True, False] = Field(
        "auto",
        description="pack short samples into max_length rows (SFT; padding-free); "
        "auto: when the median sample is at most a quarter of max_length, on a GPU",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="training dtype; auto: bf16 on a bf16 GPU or a CPU with amx_bf16 or "
        "avx512_bf16 (LoRA: bf16 frozen base, fp32 adapter), fp16 on older GPUs, else fp32",
    )
    tensorboard: bool = Field(False, description="also write TensorBoard events to RUN/tensorboard")
    save_steps: int = Field(10, ge=0, description="checkpoint every N steps; 0 disables")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    eval_steps: int = Field(0, ge=0, description="evaluate every N steps; 0: before/after only")
    early_stopping_patience: int = Field(
        0, ge=0, description="stop after N evaluations without improvement; 0 disables"
    )
    seed: int = 42


class EvalSettings(_Strict):
    """`eval:` in a run file: `largeforge eval` on the run when training succeeds."""

    tasks: list[str] = Field(
        default_factory=lambda: ["heldout"],
        min_length=1,
        description="heldout[:FILE], lm:NAME|FILE.yaml, generate:FILE, tools[:FILE], "
        "tools-free[:FILE] (without the grammar)",
    )
    compare: list[str] = Field(
        default_factory=list,
        description="base, adapter, merged, quantized, NAME=MODEL (default: all the run has)",
    )
    fidelity: bool = Field(False, description="also check the served model is the trained one")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        for task in tasks:
            try:
                parse_task(task)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return tasks


class RunConfig(_Strict):
    """A training run file. Every field has a default: an empty file is a valid run."""

    model: str = Field(DEFAULT_MODEL, description="alias, local directory, or Hugging Face id")
    dataset: str | DatasetSettings | list[str | DatasetSettings] = Field(
        DEFAULT_DATASET, description="a path, a dataset mapping, or a list of them (mixed)"
    )
    train_on: Literal["all", "last"] = Field("all", description="assistant turns to train on")
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    output_dir: str = Field("runs", description="parent directory of run directories")
    name: str | None = Field(None, description="run directory name (default: timestamped)")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    method: TrainingMethod = Field(
        TrainingMethod.SFT,
        description="sft; dpo, orpo or simpo on preference pairs; kto on labelled completions "
        "(or pairs); grpo on prompts with rewards",
    )
    adapter: AdapterKind = Field(
        AdapterKind.LORA, description="LoRA adapter, LoRA on a 4-bit base (CUDA), or full weights"
    )
    # Method option groups: one key per method that has options of its own.
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="options of method: dpo")
    kto: KtoSettings = Field(default_factory=KtoSettings, description="options of method: kto")
    orpo: OrpoSettings = Field(default_factory=OrpoSettings, description="options of method: orpo")
    simpo: SimpoSettings = Field(
        default_factory=SimpoSettings, description="options of method: simpo"
    )
    grpo: GrpoSettings = Field(default_factory=GrpoSettings, description="options of method: grpo")
    merge: bool = True
    lora: LoraSettings = Field(default_factory=LoraSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    eval: EvalSettings | None = Field(
        None, description="evaluate the run when it succeeds (see `largeforge eval`)"
    )

    def dataset_specs(self) -> tuple[DatasetSpec, ...]:
        items = self.dataset if isinstance(self.dataset, list) else [self.dataset]
        return tuple(
            DatasetSettings(path=item).to_spec() if isinstance(item, str) else item.to_spec()
            for item in items
        )

    def to_plan(self) -> TrainingPlan:
        """The framework-free plan the `RunTraining` use case executes; a `ConfigError` (one
        line naming the key) when the settings do not fit together."""
        try:
            return self._plan()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _plan(self) -> TrainingPlan:
        t = self.training
        return TrainingPlan(
            model=self.model,
            datasets=self.dataset_specs(),
            validation=self.validation.to_policy(),
            train_on=self.train_on,
            method=self.method,
            adapter=self.adapter,
            dpo=self.dpo.to_options(),
            kto=self.kto.to_options(),
            orpo=self.orpo.to_options(),
            simpo=self.simpo.to_options(),
            grpo=self.grpo.to_options(),
            lora=LoraSpec(
                rank=self.lora.rank,
                alpha=self.lora.alpha,
                dropout=self.lora.dropout,
                target_modules=tuple(self.lora.target_modules),
                use_dora=self.lora.dora,
            ),
            max_steps=t.max_steps,
            epochs=t.epochs,
            batch_size=t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            warmup_steps=t.warmup_steps,
            max_length=t.max_length,
            val_size=t.val_size,
            logging_steps=t.logging_steps,
            packing=t.packing,
            precision=t.precision,
            tensorboard=t.tensorboard,
            save_steps=t.save_steps,
            keep_checkpoints=t.keep_checkpoints,
            eval_steps=t.eval_steps,
            early_stopping_patience=t.early_stopping_patience,
            seed=t.seed,
            merge=self.merge,
        )


class ServeSettings(_Strict):
    """Settings of `largeforge serve`."""

    model: str = DEFAULT_MODEL
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int | None = Field(None, gt=0)
    backend: Literal["transformers", "vllm"] = "transformers"
    lora: dict[str, str] = Field(default_factory=dict, description="served name -> adapter dir")
    enable_lora: bool = Field(
        False, description="allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter"
    )
    max_loras: int = Field(4, ge=1, description="vllm: adapters loaded at run time kept at once")
    max_lora_rank: int = Field(16, ge=1, description="vllm: the highest rank loaded at run time")
    max_num_seqs: int = Field(16, ge=1, le=1024)
    max_queue: int = Field(256, ge=0)
    on_overflow: Literal["reject", "truncate-max-tokens"] = "reject"
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    embedding_model: str | None = Field(
        None,
        description="an embedding model served beside the chat model on /v1/embeddings, under "
        "this id: `all-minilm-l6-v2` (packaged), a local directory or a Hugging Face id",
    )
    tool_call_parser: Literal["hermes", "llama3_json", "mistral", "pythonic"] | None = Field(
        None, description="tool-call format; default: chosen from the chat template"
    )

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model


class Settings(_Strict):
    """Everything the container needs: where things live, and the run/serve settings."""

    home: str | None = Field(None, description="cache of converted models ($LARGEFORGE_HOME)")
    process_rank: int = Field(0, ge=0, description="this process's rank in a multi-process run")
    run: RunConfig = Field(default_factory=RunConfig)
    serve: ServeSettings = Field(default_factory=ServeSettings)


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run file (or the defaults), apply dotted overrides, validate.

    Raises `ConfigError` with one line naming the file, the key and the closest valid key.
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        data = read_yaml_mapping(path, "config file")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        target = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return validate_settings(RunConfig, data, source)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML file (empty for an empty file); `ConfigError` names the file,
    the line of a syntax error, or what it holds instead of a mapping."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def validate_settings(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate `data` as `model`, turning the first pydantic error into a `ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_error(model, exc)}") from None


def describe_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line about the first validation error, suggesting the closest valid key."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(root)"
    if error["type"] == "extra_forbidden":
        valid = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" (did you mean '{'.'.join([*loc[:-1], close[0]])}'?)" if close else ""
        return f"unknown key '{key}'{hint}; valid keys here: {', '.join(valid)}"
    value = error.get("input")
    return f"'{key}': {error['msg'].lower()} (got {value!r})"


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    current: Any = model
    for part in path:
        field = current.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)
