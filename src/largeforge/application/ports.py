"""Ports: the roles the use cases need from the outside world, as `typing.Protocol`s."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from largeforge.domain.datasets import (
    EncodedExample,
    Message,
    SftExample,
    TextExample,
)
from largeforge.domain.evaluation import ModelVariant, Score
from largeforge.domain.fidelity import ProbeAnswer, TokenizerFacts
from largeforge.domain.generation import SamplingParams, TokenLogprob, TokenStep, ToolCallDelta
from largeforge.domain.quantization import QuantizationMethod, QuantizationSpec
from largeforge.domain.tools import Constraint, ToolChoice, ToolSpec
from largeforge.domain.training import (
    StepMetrics,
    TrainingPlan,
    TrainingResult,
    TrainingRun,
    TrainingUnit,
)

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
    """Trains a model directory by one `TrainingMethod` and writes its output under `run_dir`.

    `train` and `evaluation` hold the units the method consumes (encoded conversations for
    SFT, preference pairs for DPO, ORPO and SimPO, labelled completions for KTO, prompts for
    GRPO); the container maps each method to its trainer.
    """

    def check_plan(self, plan: TrainingPlan) -> None:
        """Refuse, with a `ConfigError` naming the key, what this trainer cannot run, before
        data or a model loads (GRPO imports the user's reward functions here)."""
        ...

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
        """With `resume`, continue from the latest complete checkpoint under `run_dir`."""
        ...


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


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """How busy an engine is, as `AdmissionLimits` counts it: sequences waiting because every
    slot is taken, and sequences holding (or about to take) a slot."""

    waiting: int
    running: int


@runtime_checkable
class InferenceEngine(Protocol):
    """Generates tokens from one loaded model and, optionally, LoRA adapters on top of it.

    `generate` yields one `TokenStep` per generated token; closing the iterator early (a stop
    string was met, the client went away) releases the sequence's slot at once. Raises
    `EngineOverloadedError` when every slot is taken and its waiting line is full
    (`AdmissionLimits`), `EngineUnavailableError` once it is shutting down.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def adapters(self) -> tuple[str, ...]:
        """Served LoRA adapter names (each is a model id of its own)."""
        ...

    @property
    def context_window(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def native_tools(self) -> bool:
        """Whether the chat template renders tools itself (else the fallback block does)."""
        ...

    @property
    def tool_format(self) -> str:
        """The tool-call format its chat template teaches (`hermes` for the fallback block)."""
        ...

    def render_chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> list[int]:
        """Prompt token ids: the conversation in the model's chat template plus the generation
        prompt. With `tools`, the template's own tool rendering, or for a template without
        one the fallback block in the system prompt (`largeforge.domain.tool_prompt`)."""
        ...

    def check_constraint(self, constraint: Constraint) -> None:
        """Compile `constraint` (cached) or raise `InvalidRequestError` naming why it cannot."""
        ...

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; prompts are tokenized without special tokens (the default)."""
        ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each id's entry in the vocabulary (e.g. `Ġworld`), as vLLM's `/tokenize` shows it."""
        ...

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        """Tokens after `prompt_ids` until end-of-sequence or `params.max_tokens` (required)."""
        ...

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top: int, adapter: str | None = None
    ) -> list[TokenLogprob]:
        """Each prompt token's log-probability given the tokens before it (the first: None)."""
        ...

    async def load_adapter(self, name: str, path: str) -> None:
        """Serve the LoRA adapter in directory `path` as `name` from now on. Raises
        `InvalidRequestError` naming why it cannot: the engine was started without adapter
        loading, the directory holds no adapter for this model, a rank above the limit."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Forget adapter `name` and free its weights (its requests have finished)."""
        ...

    def load(self) -> EngineLoad: ...

    def close(self) -> None: ...


ReplyPiece = str | ToolCallDelta
"""What a tool-call parser makes of generated text: plain content, or a piece of a call (the
call's `index` in the answer; its name once, then argument fragments; `id` left None)."""


@runtime_checkable
class ToolCallParser(Protocol):
    """Splits one answer's text, fed in pieces as it is generated, into content and calls.

    Call text never reaches the content. Feeding the same text in any chunking yields the same
    content and the same calls (names and joined arguments).
    """

    def feed(self, text: str) -> list[ReplyPiece]: ...

    def finish(self) -> list[ReplyPiece]:
        """The end of the answer: whatever was held back (a partial trigger is content)."""
        ...


@runtime_checkable
class ToolCallFormat(Protocol):
    """How one model family writes tool calls: the grammar that forces valid calls of the given
    tools, and a parser for its output."""

    name: str

    def constraint(
        self, tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool
    ) -> Constraint:
        """A grammar for the answer: under `auto` free text in which every call that starts
        is a valid call; under `required` or a named function only calls (at least one)."""
        ...

    def parser(self) -> ToolCallParser:
        """A new parser for one answer."""
        ...


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


@runtime_checkable
class Embeddings(Protocol):
    """Unit-length sentence embeddings, kept in the adapter's own array type."""

    def __len__(self) -> int: ...

    def cosine(self, other: Embeddings) -> list[list[float]]:
        """Cosine similarity of every row of `self` (rows) with every row of `other` (columns)."""
        ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into sentence embeddings."""

    name: str

    def embed(self, texts: Sequence[str]) -> Embeddings: ...


@runtime_checkable
class ExpertClient(Protocol):
    """Talks to one replica of an expert over the OpenAI API (remote URL or in-process app).

    Failures raise `ReplicaError` with the replica's status (None when it never answered).
    """

    async def models(self) -> list[str]:
        """The model ids the replica serves (also its health check)."""
        ...

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body (e.g. to `/chat/completions`) and return the JSON answer."""
        ...

    def stream(self, path: str, body: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST with `stream: true`; yield each SSE chunk's JSON until `[DONE]`."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Quantizer(Protocol):
    """Quantizes a model directory's linear layers with calibration data (one engine)."""

    engine: str  # e.g. "llm-compressor 0.14.0.1"

    def check(self, method: QuantizationMethod) -> None:
        """Raise `BackendUnavailableError` (with the install command) when it cannot run."""
        ...

    def quantize(
        self,
        model_dir: str,
        spec: QuantizationSpec,
        calibration: Sequence[Sequence[int]],
        output_dir: str,
    ) -> list[str]:
        """Write the quantized model and tokenizer to `output_dir`; return notes for the report."""
        ...


@runtime_checkable
class ModelInspector(Protocol):
    """Reads a model's shape from its config, without loading its weights."""

    def architecture(self, model_dir: str) -> str: ...

    def linear_widths(self, model_dir: str, ignore: Sequence[str]) -> dict[str, int]:
        """Input width of every linear layer except those matching `ignore`."""
        ...

    def weights_bytes(self, model_dir: str) -> int:
        """Bytes of the model's weight files on disk."""
        ...


@runtime_checkable
class PerplexityEvaluator(Protocol):
    """Perplexity of a (possibly quantized) model directory on texts."""

    def perplexity(
        self, model_dir: str, texts: Sequence[str], max_length: int
    ) -> tuple[float, int]:
        """(perplexity, number of scored tokens)."""
        ...


@runtime_checkable
class EvaluationTask(Protocol):
    """One evaluation task (held-out loss, an lm-evaluation-harness task, a generation or
    tool-call file): scores one model variant. Tasks load what they need per variant and free
    it before returning, so variants are evaluated one after another."""

    @property
    def name(self) -> str: ...

    def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]: ...


@dataclass(frozen=True, slots=True)
class SequenceScore:
    """One example's summed negative log-likelihood over its trained tokens, their number, and
    (when asked) the model's top-1 prediction at each of them."""

    nll: float
    tokens: int
    top1: tuple[int, ...] = ()


@runtime_checkable
class SequenceScorer(Protocol):
    """Teacher-forced scoring of encoded examples (their own loss masks) by a model variant."""

    def score(
        self, variant: ModelVariant, examples: Sequence[EncodedExample], *, top1: bool = False
    ) -> list[SequenceScore]: ...


@runtime_checkable
class EngineFactory(Protocol):
    """An inference engine for a model variant, serving it under the model id `variant.name`
    (an adapter variant: the base with the adapter registered under that id). The caller
    closes it."""

    def open(self, variant: ModelVariant) -> InferenceEngine: ...


@runtime_checkable
class TokenizerFactsReader(Protocol):
    """Reads `TokenizerFacts` (chat template, special tokens, EOS/pad ids, generation_config)
    of model directories, and what a run recorded of the tokenizer it trained with."""

    def read(self, model_dir: str) -> TokenizerFacts: ...

    def recorded(self, run_dir: str) -> TokenizerFacts | None:
        """The facts a run recorded before training (None for runs made before records)."""
        ...

    def artifacts(self, run_dir: str) -> list[str]:
        """The servable model directories of a run: merged/, then any quantized ones."""
        ...

    def adapter_dir(self, run_dir: str) -> str | None:
        """The run's LoRA adapter directory (adapter/), when it has one."""
        ...


@runtime_checkable
class ReferenceGenerator(Protocol):
    """Greedy answers of transformers' own `generate` on a model directory's weights."""

    def answers(
        self, model_dir: str, probes: Sequence[Sequence[Message]], max_tokens: int
    ) -> list[ProbeAnswer]: ...


@runtime_checkable
class ServedProbe(Protocol):
    """Serves a model directory through the real HTTP API (`largeforge serve`'s app) and asks
    it the probes at temperature 0; with `adapter`, the base serves that LoRA adapter beside it
    and the adapter's model id answers."""

    def answers(
        self,
        model_dir: str,
        probes: Sequence[Sequence[Message]],
        max_tokens: int,
        adapter: str | None = None,
    ) -> list[ProbeAnswer]: ...
