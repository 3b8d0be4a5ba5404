"""In-memory and fake adapters for every port: used by the unit tests through the container."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from largeforge.application.ports import EngineLoad, MetricsCallback, RawRow
from largeforge.domain import (
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
)
from largeforge.domain.datasets import EncodedExample, TextExample
from largeforge.domain.errors import EngineOverloadedError, InvalidRequestError
from largeforge.domain.generation import TokenLogprob, TokenStep
from largeforge.domain.tools import Constraint, ToolSpec
from largeforge.domain.training import TrainingUnit


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
    refuse_with: BaseException | None = None  # raised by `check_plan`

    def check_plan(self, plan: TrainingPlan) -> None:
        if self.refuse_with is not None:
            raise self.refuse_with

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[TrainingUnit],
        evaluation: Sequence[TrainingUnit],
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
    """The DPO `ModelTrainer`: records the pairs it was given; the eval reward margin grows from
    0 to 0.5."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def check_plan(self, plan: TrainingPlan) -> None:
        pass

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[TrainingUnit],
        evaluation: Sequence[TrainingUnit],
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


class FakeTokenizerFactsReader:
    """`TokenizerFacts` by model directory (ChatML-like defaults for any directory); `records`
    holds what runs recorded, by run directory."""

    def __init__(self) -> None:
        from largeforge.domain.fidelity import TokenizerFacts

        self.default = TokenizerFacts(
            chat_template="{{ messages }}",
            eos_token="<|im_end|>",
            eos_token_id=2,
            special_tokens=(("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)),
            turn_end_token="<|im_end|>",
            turn_end_token_id=2,
            generation_eos_token_ids=(2,),
        )
        self.facts: dict[str, Any] = {}
        self.records: dict[str, Any] = {}
        self.reads: list[str] = []

    def read(self, model_dir: str) -> Any:
        self.reads.append(model_dir)
        return self.facts.get(model_dir, self.default)

    def recorded(self, run_dir: str) -> Any:
        return self.records.get(run_dir)

    def artifacts(self, run_dir: str) -> list[str]:
        return [f"{run_dir}/merged"]

    def adapter_dir(self, run_dir: str) -> str | None:
        return f"{run_dir}/adapter"


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
    """A word-level engine: a word is a token; it answers with the last user message's words.

    Greedy replies echo the words in order and end with EOS; sampled replies shuffle them with
    the request's seed. `delay` slows each token (for disconnect tests); `overloaded` makes it
    refuse work as a full queue does.
    """

    EOS = "<eos>"

    def __init__(self, model_id: str = "fake-model", context_window: int = 64) -> None:
        self._model_id = model_id
        self._context_window = context_window
        self._vocab: dict[str, int] = {self.EOS: 0}
        self.adapter_names: tuple[str, ...] = ()
        self.requests: list[tuple[tuple[int, ...], SamplingParams, str | None]] = []
        self.active = 0
        self.delay = 0.0
        self.overloaded = False
        self.fail_after: int | None = None
        self.closed = False
        self.script: list[str] | None = None  # exact token texts to answer with, then EOS
        self.rendered_tools: list[tuple[str, ...]] = []
        self.checked: list[Constraint] = []
        self.refuse_constraints = False
        self.native_tools = False
        self.tool_format = "hermes"
        self.adapter_loading = False  # as `serve --enable-lora`
        self.hold: asyncio.Event | None = None  # when set: each token waits for it
        self.running: dict[str | None, int] = {}  # generating now, by adapter
        self.unloaded: list[tuple[str, int]] = []  # (adapter, still running with it then)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def adapters(self) -> tuple[str, ...]:
        return self.adapter_names

    @property
    def context_window(self) -> int:
        return self._context_window

    def _id(self, word: str) -> int:
        return self._vocab.setdefault(word, len(self._vocab))

    def _word(self, token: int) -> str:
        return next((w for w, i in self._vocab.items() if i == token), f"<unk{token}>")

    @property
    def vocab_size(self) -> int:
        return 1000

    def check_constraint(self, constraint: Constraint) -> None:
        self.checked.append(constraint)
        if self.refuse_constraints:
            raise InvalidRequestError("the fake grammar engine refuses it")

    def render_chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> list[int]:
        self.rendered_tools.append(tuple(t.name for t in tools))
        ids = []
        for m in messages:
            ids += [self._id(f"<{m.role.value}>"), *self.tokenize(m.content), self._id("<end>")]
        return [*ids, self._id("<assistant>")]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        bos = [self._id("<bos>")] if add_special_tokens else []
        return bos + [self._id(w) for w in text.split()]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self._word(i) for i in ids if i != 0 or not skip_special_tokens)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self._word(i) for i in ids]

    def _reply(self, prompt_ids: Sequence[int], params: SamplingParams) -> list[str]:
        user = self._id("<user>")
        last = max((i for i, t in enumerate(prompt_ids) if t == user), default=-1)
        words = [self._word(t) for t in prompt_ids[last + 1 :] if not self._word(t).startswith("<")]
        if not params.greedy:
            random.Random(params.seed).shuffle(words)
        return words

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        if self.overloaded:
            raise EngineOverloadedError("the fake queue is full", retry_after=3)
        self.requests.append((tuple(prompt_ids), params, adapter))
        words = self._reply(prompt_ids, params) if self.script is None else list(self.script)
        if adapter:
            words = [f"[{adapter}]", *words]
        words.append(self.EOS)
        budget = params.max_tokens or 1
        self.active += 1
        self.running[adapter] = self.running.get(adapter, 0) + 1
        try:
            for n, word in enumerate(words[:budget], start=1):
                if self.fail_after is not None and n > self.fail_after:
                    raise RuntimeError("the fake engine broke")
                if adapter is not None and adapter not in self.adapter_names:
                    raise RuntimeError(f"adapter {adapter} was freed while generating")
                await asyncio.sleep(self.delay)
                if self.hold is not None:
                    await self.hold.wait()
                logprob = None
                if params.logprobs is not None:
                    top = tuple((f"{word}{'~' * k}", -0.5 - k) for k in range(params.logprobs))
                    logprob = TokenLogprob(word, -0.5, top, self._id(word))
                finish = None
                if word == self.EOS:
                    finish = FinishReason.STOP
                elif n == budget:
                    finish = FinishReason.LENGTH
                text = "" if word == self.EOS else (word if n == 1 else f" {word}")
                if self.script is not None and word != self.EOS:
                    text = word
                yield TokenStep(self._id(word), text, logprob, finish)
        finally:
            self.active -= 1
            self.running[adapter] -= 1

    async def load_adapter(self, name: str, path: str) -> None:
        if not self.adapter_loading:
            raise InvalidRequestError("start it with --enable-lora", param="lora_path")
        if not path.startswith("/adapters/"):
            raise InvalidRequestError(f"no adapter_config.json in {path}", param="lora_path")
        self.adapter_names = (*self.adapter_names, name)

    async def unload_adapter(self, name: str) -> None:
        self.unloaded.append((name, self.running.get(name, 0)))
        self.adapter_names = tuple(a for a in self.adapter_names if a != name)

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top: int, adapter: str | None = None
    ) -> list[TokenLogprob]:
        entries = [TokenLogprob(self._word(t), -1.0, (), t) for t in prompt_ids]
        return [TokenLogprob(entries[0].token, None, (), prompt_ids[0]), *entries[1:]]

    def load(self) -> EngineLoad:
        return EngineLoad(0, self.active)

    def close(self) -> None:
        self.closed = True


class FakeEmbeddingEncoder:
    """A word-level `EmbeddingEncoder`: [CLS] words [SEP]; a vector is the L2-normalised count
    of each id modulo `dimensions`, so texts sharing words are close."""

    CLS, SEP = 1, 2

    def __init__(self, dimensions: int = 8, max_input_tokens: int = 16) -> None:
        self.name = "fake-encoder"
        self._dimensions = dimensions
        self._max_input_tokens = max_input_tokens
        self._vocab: dict[str, int] = {"[PAD]": 0, "[CLS]": self.CLS, "[SEP]": self.SEP}
        self.batches: list[list[tuple[int, ...]]] = []

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_input_tokens(self) -> int:
        return self._max_input_tokens

    @property
    def vocab_size(self) -> int:
        return 100

    def tokenize(self, text: str) -> list[int]:
        words = [self._vocab.setdefault(w, len(self._vocab)) for w in text.lower().split()]
        return [self.CLS, *words, self.SEP]

    def vectors(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        self.batches.append([tuple(i) for i in inputs])
        result = []
        for ids in inputs:
            counts = [0.0] * self._dimensions
            for i in ids:
                counts[i % self._dimensions] += 1.0
            norm = sum(c * c for c in counts) ** 0.5 or 1.0
            result.append([c / norm for c in counts])
        return result

    def embed(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError("the router's path; the API uses vectors()")
