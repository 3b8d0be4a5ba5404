"""Ports: the roles the use cases need from the outside world, as `typing.Protocol`s."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from largeforge.domain.datasets import LoadedDataset, Message, SftExample
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
class DatasetReader(Protocol):
    """Reads a dataset source into examples, reporting every row it could not use."""

    def read(self, source: str) -> LoadedDataset: ...


@runtime_checkable
class ModelTrainer(Protocol):
    """Fine-tunes a model directory on examples and writes an adapter under `run_dir`."""

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[SftExample],
        evaluation: Sequence[SftExample],
        run_dir: str,
        on_metrics: MetricsCallback,
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
