"""Pydantic descriptions of what the routes answer, for the OpenAPI document only.

`responses` builds these bodies as plain dicts (fast); the schema-driven fuzz test validates
every answer against these descriptions, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from largeforge.domain.generation import FinishReason


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Closed):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Closed):
    """The OpenAI error shape, for every 4xx and 5xx."""

    error: ErrorDetail


class Usage(_Closed):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class TopLogprob(_Closed):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(_Closed):
    token: str
    logprob: float | None
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Closed):
    content: list[TokenLogprob]
    refusal: None


class FunctionCall(_Closed):
    name: str
    arguments: str = Field(description="JSON text that validates against the tool's parameters")


class ToolCall(_Closed):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Closed):
    role: Literal["assistant"]
    content: str | None = Field(description="null when the answer is only tool calls")
    refusal: None
    tool_calls: list[ToolCall] | None = None


class FunctionCallDelta(_Closed):
    name: str | None = None
    arguments: str


class ToolCallDelta(_Closed):
    """A piece of a streamed call: `id`, `type` and the name first, then argument fragments."""

    index: int = Field(ge=0)
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatChoice(_Closed):
    index: int = Field(ge=0)
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(_Closed):
    """`POST /v1/chat/completions`, not streamed."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Closed):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Closed):
    index: int = Field(ge=0)
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Closed):
    """One event of a streamed chat completion (`usage` only with `include_usage`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class TextLogprobs(_Closed):
    """The legacy completions shape: parallel lists; the first prompt token has no logprob."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TextChoice(_Closed):
    index: int = Field(ge=0)
    text: str
    logprobs: TextLogprobs | None
    finish_reason: FinishReason


class TextCompletion(_Closed):
    """`POST /v1/completions`, not streamed: choice index = prompt index * n + choice."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class TextChunkChoice(_Closed):
    index: int = Field(ge=0)
    text: str
    logprobs: TextLogprobs | None
    finish_reason: FinishReason | None


class TextCompletionChunk(_Closed):
    """One event of a streamed text completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None


class ModelList(_Closed):
    """`GET /v1/models`."""

    object: Literal["list"]
    data: list[ModelCard]


class Health(_Closed):
    """`GET /health` of `largeforge serve`: 200 `ok` once loaded, else 503."""

    status: Literal["ok", "loading", "error"]
    models: list[str] | None = None
    error: str | None = None


class RouterHealth(_Closed):
    """`GET /health` of the router: 200 while the default expert has a healthy replica."""

    status: Literal["ok", "degraded"]
    healthy_replicas: dict[str, int]


class RelayedCompletion(BaseModel):
    """An expert's answer relayed by the router, `model` set to the expert's name."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    model: str
    choices: list[dict[str, Any]]


class RelayedChunk(BaseModel):
    """One streamed chunk of an expert, relayed by the router."""

    model_config = ConfigDict(extra="allow")

    model: str
    choices: list[dict[str, Any]]


class Replica(BaseModel):
    """One replica of an expert: its state, breaker, load and latency."""

    model_config = ConfigDict(extra="allow")

    name: str


class Expert(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    replicas: list[Replica]


class ExpertsView(_Closed):
    """`GET /router/experts`."""

    router: str
    classifier: str
    strategy: str
    default_expert: str
    experts: list[Expert]


class NewReplica(BaseModel):
    """`POST /router/experts/{expert}/replicas`: a remote replica of an expert."""

    model_config = ConfigDict(extra="allow")

    url: str = Field(description="base URL of the replica's OpenAI API, e.g. http://host:8000/v1")
    name: str | None = Field(None, description="defaults to `<expert>-<n>`")
    model: str | None = Field(None, description="model id on the replica; default: its first")
    weight: float = Field(1.0, gt=0)
    api_key: str | None = None


class RemovedExpert(_Closed):
    removed: str


class Removed(_Closed):
    removed: str
    expert: str


class TokenizeResponse(_Closed):
    """`POST /tokenize` (vLLM's shape)."""

    count: int = Field(ge=0)
    max_model_len: int = Field(ge=1, description="the model's context window")
    tokens: list[int]
    token_strs: list[str] | None = Field(description="with `return_token_strs`, else null")


class DetokenizeResponse(_Closed):
    """`POST /detokenize` (vLLM's shape): the text of the ids, special tokens included."""

    prompt: str


class Embedding(_Closed):
    object: Literal["embedding"]
    index: int = Field(ge=0)
    embedding: list[float] | str = Field(
        description="floats, or with `encoding_format: base64` little-endian float32 in base64"
    )


class EmbeddingUsage(_Closed):
    prompt_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class EmbeddingList(_Closed):
    """`POST /v1/embeddings`: one unit-length vector per input, in the inputs' order."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
