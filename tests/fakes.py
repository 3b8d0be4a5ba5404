"""In-memory and fake adapters for every port: used by the unit tests through the container."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from largeforge.application.ports import MetricsCallback, RawRow
from largeforge.domain import (
    Completion,
    DatasetError,
    FinishReason,
    Message,
    ModelNotFoundError,
    Role,
    SamplingParams,
    SftExample,
    StepMetrics,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
    Usage,
)
from largeforge.domain.datasets import EncodedExample, PreferencePair, TextExample


class FakeClock:
    """Starts at a fixed instant and advances one second per call."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now


class FakeModelResolver:
    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.known = dict(known or {"tiny": "/models/tiny"})

    def resolve(self, ref: str) -> str:
        if ref not in self.known:
            raise ModelNotFoundError(f"model '{ref}' not found")
        return self.known[ref]


class InMemoryRowSource:
    """Rows kept in memory by source name; a `str` row stands for an undecodable line."""

    def __init__(self, datasets: Mapping[str, list[Any]]) -> None:
        self.datasets = dict(datasets)

    def name(self, source: str) -> str:
        return source

    def rows(self, source: str) -> Iterator[RawRow]:
        if source not in self.datasets:
            raise DatasetError(f"dataset file not found: {source}")
        for line, row in enumerate(self.datasets[source], start=1):
            if isinstance(row, str):
                yield RawRow(line, error=f"invalid JSON: {row}")
            else:
                yield RawRow(line, row)


class FakeEncoder:
    """One token per word, plus an end-of-turn token (id 2); assistant turns are trainable."""

    def encode(self, example: SftExample) -> EncodedExample:
        ids: list[int] = []
        trainable: list[bool] = []
        for message in example.conversation.messages:
            words = message.content.split()
            ids += [10 + len(w) for w in words] + [2]
            trainable += [message.role is Role.ASSISTANT] * (len(words) + 1)
        return EncodedExample(tuple(ids), tuple(trainable), example.source)

    def encode_many(self, examples: Sequence[SftExample]) -> list[EncodedExample]:
        return [self.encode(e) for e in examples]

    def encode_text(self, example: TextExample) -> EncodedExample:
        ids = (*tuple(10 + len(w) for w in example.text.split()), 2)
        return EncodedExample(ids, (True,) * len(ids), example.source)


class FakeEncoderFactory:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def for_model(self, model_dir: str, train_on: str = "all") -> FakeEncoder:
        self.requests.append((model_dir, train_on))
        return FakeEncoder()


@dataclass
class FakeModelTrainer:
    """Records what it was asked to train and emits a short, decreasing loss curve."""

    fail_with: BaseException | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

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
        self.calls.append(
            {
                "plan": plan,
                "model_dir": model_dir,
                "train": train,
                "eval": evaluation,
                "resume": resume,
            }
        )
        if self.fail_with is not None:
            raise self.fail_with
        for step in range(1, plan.max_steps + 1):
            on_metrics(StepMetrics(step=step, loss=2.0 / step, learning_rate=plan.learning_rate))
        return TrainingResult(
            adapter_dir=str(Path(run_dir) / "adapter"),
            steps=plan.max_steps,
            train_loss=1.0,
            eval_loss_before=2.0,
            eval_loss_after=1.5,
            train_examples=len(train),
            eval_examples=len(evaluation),
        )


@dataclass
class FakePreferenceTrainer:
    """Records the pairs it was given; the eval reward margin grows from 0 to 0.5."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[PreferencePair],
        evaluation: Sequence[PreferencePair],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult:
        self.calls.append({"plan": plan, "train": train, "eval": evaluation, "resume": resume})
        on_metrics(StepMetrics(step=1, loss=0.69, reward_margin=0.1))
        return TrainingResult(
            adapter_dir=str(Path(run_dir) / "adapter"),
            steps=1,
            train_loss=0.69,
            eval_loss_before=0.69,
            eval_loss_after=0.6,
            train_examples=len(train),
            eval_examples=len(evaluation),
            eval_reward_margin_before=0.0,
            eval_reward_margin_after=0.5,
        )


@dataclass
class FakeModelMerger:
    merges: list[tuple[str, str, str]] = field(default_factory=list)

    def merge(self, base_dir: str, adapter_dir: str, output_dir: str) -> str:
        self.merges.append((base_dir, adapter_dir, output_dir))
        return output_dir


class InMemoryRunStore:
    def __init__(self, root: str = "/runs") -> None:
        self.root = root
        self.runs: dict[str, TrainingRun] = {}
        self.states: dict[str, list[str]] = {}
        self.configs: dict[str, Mapping[str, Any]] = {}
        self.metrics: dict[str, list[StepMetrics]] = {}
        self.documents: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.reports: list[str] = []

    def run_dir(self, run_id: str) -> str:
        return f"{self.root}/{run_id}"

    def create(self, run: TrainingRun, config: Mapping[str, Any]) -> str:
        self.configs[run.run_id] = config
        self.metrics[run.run_id] = []
        self.save(run)
        return self.run_dir(run.run_id)

    def save(self, run: TrainingRun) -> None:
        self.runs[run.run_id] = run
        self.states.setdefault(run.run_id, []).append(run.state.value)

    def load(self, run_id: str) -> TrainingRun:
        return self.runs[run_id]

    def append_metrics(self, run_id: str, metrics: StepMetrics) -> None:
        self.metrics[run_id].append(metrics)

    def write_report(self, run: TrainingRun) -> str:
        self.reports.append(run.run_id)
        return f"{self.run_dir(run.run_id)}/report.md"

    def write_json(self, run_id: str, name: str, payload: Mapping[str, Any]) -> None:
        self.documents[(run_id, name)] = payload


class FakeInferenceEngine:
    """Echoes the last user message back, word by word, up to `max_tokens` words."""

    def __init__(self, model_id: str = "fake-model", context_window: int = 64) -> None:
        self._model_id = model_id
        self._context_window = context_window
        self.requests: list[tuple[tuple[Message, ...], SamplingParams]] = []
        self.closed = False

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return self._context_window

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> Completion:
        from largeforge.domain.generation import completion_budget

        self.requests.append((tuple(messages), params))
        prompt_tokens = sum(len(m.content.split()) + 2 for m in messages)
        budget = completion_budget(params, prompt_tokens, self._context_window)
        words = messages[-1].content.split()
        reply = words[:budget]
        finish = FinishReason.LENGTH if len(words) > budget else FinishReason.STOP
        return Completion(" ".join(reply), finish, Usage(prompt_tokens, len(reply)))

    def close(self) -> None:
        self.closed = True
