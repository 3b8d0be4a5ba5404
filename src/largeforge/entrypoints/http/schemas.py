"""OpenAI-compatible request bodies (pydantic) and their mapping to the domain.

Fields OpenAI defines but this server does not implement are accepted at their neutral value
and refused (400, naming the field) otherwise; fields OpenAI does not define are refused, as
OpenAI itself does ("Unrecognized request argument").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.generation import (
    MAX_CHOICES,
    MAX_TOP_LOGPROBS,
    ChatRequest,
    SamplingParams,
    TextRequest,
)

SEED_RANGE = (-(2**63), 2**64 - 1)


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, refusal ...

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part type '{part.type}' is not supported (only 'text')",
                    param=f"messages.{index}.content",
                )
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(_Body):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class _Sampling(_Body):
    """Parameters shared by both endpoints."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    service_tier: str | None = None
    ignore_eos: StrictBool = False  # vLLM's extension, for benchmarks

    @model_validator(mode="after")
    def _consistent(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise _FieldError("stream_options", "stream_options is only allowed with stream=true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise _FieldError("stop", "at most 4 stop sequences")
        if self.stop == "" or (isinstance(self.stop, list) and "" in self.stop):
            raise _FieldError("stop", "stop sequences must not be empty")
        if self.logit_bias:
            raise _FieldError("logit_bias", "logit_bias is not supported")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            stop=self.stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logprobs=logprobs,
            ignore_eos=self.ignore_eos,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionBody:
        if self.top_logprobs is not None and not self.logprobs:
            raise _FieldError("top_logprobs", "top_logprobs requires logprobs=true")
        if self.tools:
            raise _FieldError("tools", "tool calling is not supported by this server")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise _FieldError("response_format", "only response_format type 'text' is supported")
        return self

    def to_domain(self) -> ChatRequest:
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        messages = tuple(
            Message(Role.SYSTEM if m.role == "developer" else Role(m.role), m.text(i))
            for i, m in enumerate(self.messages)
        )
        max_tokens = self.max_completion_tokens or self.max_tokens
        return ChatRequest(self.model, messages, self.params(max_tokens, logprobs), self.n)


class CompletionBody(_Sampling):
    """`POST /v1/completions`: a prompt as text, texts, token ids or lists of token ids."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: StrictBool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=1)

    @model_validator(mode="after")
    def _supported(self) -> CompletionBody:
        if self.best_of not in (None, self.n):
            raise _FieldError("best_of", "best_of other than n is not supported")
        if self.suffix:
            raise _FieldError("suffix", "suffix is not supported")
        if isinstance(self.prompt, list) and not self.prompt:
            raise _FieldError("prompt", "prompt must not be an empty list")
        return self

    def prompts(self) -> list[str | tuple[int, ...]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [tuple(p for p in prompt if isinstance(p, int))]
        return [p if isinstance(p, str) else tuple(p) for p in prompt if not isinstance(p, int)]

    def to_domain(self) -> list[TextRequest]:
        params = self.params(self.max_tokens, self.logprobs)
        return [TextRequest(self.model, p, params, self.n, self.echo) for p in self.prompts()]


def parse_body(model: type[_Body], data: Any) -> Any:
    """Validate a JSON body; the first problem becomes an `InvalidRequestError` naming its field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):
            raise InvalidRequestError(str(cause), param=cause.field) from None
        param = ".".join(str(p) for p in error["loc"]) or None
        if error["type"] == "extra_forbidden":
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {param}", param=param
            ) from None
        raise InvalidRequestError(f"{param}: {error['msg']}", param=param) from None


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
