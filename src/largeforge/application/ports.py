"""Ports: the roles the use cases need from the outside world, as `typing.Protocol`s."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from largeforge.domain.datasets import (
    EncodedExample,
    Message,
    PreferencePair,
    SftExample,
    TextExample,
)
from largeforge.domain.generation import Completion, SamplingParams
from largeforge.domain.training import StepMetrics, TrainingPlan, TrainingResult, TrainingRun

MetricsCallback = Callable[[StepMetrics], None]


@runtime_checkable
class Clock(Protocol):
    """Tells the time (injected so tests control it)."""

    def now(self) -> datetime: ...


@runtime_checkable
class ModelResolver(Protocol):
    """Turns a model reference (alias, local path, hub id) into a local model directory."""

    def resolve(self, ref: str) -> str: ...


@runtime_checkable
class ModelTrainer(Protocol):
    """Fine-tunes a model directory on encoded examples and writes an adapter under `run_dir`."""

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[EncodedExample],
        evaluation: Sequence[EncodedExample],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult:
        """With `resume`, continue from the latest complete checkpoint under `run_dir`."""
        ...


@runtime_checkable
class PreferenceTrainer(Protocol):
    """Preference-tunes (DPO) a model directory on prompt/chosen/rejected pairs."""

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[PreferencePair],
        evaluation: Sequence[PreferencePair],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult: ...


@runtime_checkable
class ModelMerger(Protocol):
    """Folds an adapter into its base model and saves a standalone model directory."""

    def merge(self, base_dir: str, adapter_dir: str, output_dir: str) -> str: ...


@runtime_checkable
class RunStore(Protocol):
    """Persists runs: their config, state and metrics."""

    def create(self, run: TrainingRun, config: Mapping[str, Any]) -> str:
        """Create the run's directory, write its config and state; return the directory."""
        ...

    def save(self, run: TrainingRun) -> None: ...

    def load(self, run_id: str) -> TrainingRun: ...

    def append_metrics(self, run_id: str, metrics: StepMetrics) -> None: ...

    def write_report(self, run: TrainingRun) -> str:
        """Write a human-readable report of a finished run (with a loss curve); its path."""
        ...

    def write_json(self, run_id: str, name: str, payload: Mapping[str, Any]) -> None:
        """Write a JSON document (e.g. the data report) into the run's directory."""
        ...

    def run_dir(self, run_id: str) -> str: ...


@runtime_checkable
class InferenceEngine(Protocol):
    """Generates text from one loaded model."""

    @property
    def model_id(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> Completion: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RawRow:
    """One decoded row of a source, or why it could not be decoded."""

    line: int
    value: Any = None
    error: str | None = None


@runtime_checkable
class RowSource(Protocol):
    """Reads the rows of a dataset source (file, directory, hub id) in order."""

    def rows(self, source: str) -> Iterator[RawRow]: ...

    def name(self, source: str) -> str:
        """A short name for reports (the file name)."""
        ...


@runtime_checkable
class ExampleEncoder(Protocol):
    """Renders records with the model's chat template into token ids and a training mask."""

    def encode(self, example: SftExample) -> EncodedExample: ...

    def encode_many(self, examples: Sequence[SftExample]) -> list[EncodedExample]:
        """Encode a batch (adapters may parallelise)."""
        ...

    def encode_text(self, example: TextExample) -> EncodedExample: ...


@runtime_checkable
class EncoderFactory(Protocol):
    """Builds the `ExampleEncoder` of a model directory (loads only its tokenizer)."""

    def for_model(self, model_dir: str, train_on: str = "all") -> ExampleEncoder: ...
