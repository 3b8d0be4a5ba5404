"""Generation values: sampling parameters, requests, token steps, completions and usage."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from largeforge.domain.datasets import Message
from largeforge.domain.errors import ContextLengthExceededError, InvalidRequestError
from largeforge.domain.tools import (
    Constraint,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)

MAX_TOP_LOGPROBS = 20
"""The most alternatives a request may ask for per token (as OpenAI)."""

MAX_CHOICES = 16
"""The most choices (`n`) one request may ask for."""


class FinishReason(StrEnum):
    """Why generation stopped, in the OpenAI vocabulary."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"


class OverflowPolicy(StrEnum):
    """What to do when prompt + `max_tokens` exceed the context window (never cut the prompt)."""

    REJECT = "reject"
    TRUNCATE_MAX_TOKENS = "truncate-max-tokens"


def _check(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise InvalidRequestError(message, param=param)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding settings of one choice. `temperature == 0` means greedy.

    `max_tokens=None` lets the engine fill the rest of the context window (see `completion_budget`).
    `logprobs=None` returns no log-probabilities; `k >= 0` returns the chosen token's and the
    `k` most likely alternatives. `ignore_eos` keeps generating past end-of-sequence (for
    benchmarks, as vLLM's extension of the same name). `constraint` is a grammar the output
    must match (the engine masks every other token, then ends with end-of-sequence).
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    ignore_eos: bool = False
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        _check(self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be at least 1",
               "max_tokens")  # fmt: skip
        _check(0.0 <= self.temperature <= 2.0, "temperature must be between 0 and 2", "temperature")
        _check(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]", "top_p")
        _check(self.top_k >= 0 or self.top_k == -1, "top_k must be -1, 0 or positive", "top_k")
        for name in ("presence_penalty", "frequency_penalty"):
            _check(-2.0 <= getattr(self, name) <= 2.0, f"{name} must be between -2 and 2", name)
        _check(
            self.logprobs is None or 0 <= self.logprobs <= MAX_TOP_LOGPROBS,
            f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}",
            "top_logprobs",
        )
        _check(all(self.stop), "stop sequences must not be empty", "stop")
        _check(self.seed is None or -(2**63) <= self.seed < 2**64, "seed is out of range", "seed")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def for_choice(self, index: int) -> SamplingParams:
        """The parameters of choice `index` of an `n > 1` request (distinct, reproducible seeds)."""
        if index == 0 or self.seed is None:
            return self
        return replace(self, seed=(self.seed + index) % 2**63)


DEFAULT_MAX_TOKENS = 1024
"""Completion budget when a request sets none (capped by the context window)."""


def completion_budget(
    params: SamplingParams,
    prompt_tokens: int,
    context_window: int,
    overflow: OverflowPolicy = OverflowPolicy.REJECT,
    param: str = "messages",
) -> int:
    """Tokens to generate: the requested `max_tokens`, else what the context has room for.

    Raises `ContextLengthExceededError` (naming the counts) when the prompt does not fit, or the
    prompt and the requested completion do not fit and the policy is `reject`. The prompt itself
    is never shortened.
    """
    room = context_window - prompt_tokens
    wanted = params.max_tokens if params.max_tokens is not None else min(DEFAULT_MAX_TOKENS, room)
    if room >= 1 and wanted > room and overflow is OverflowPolicy.TRUNCATE_MAX_TOKENS:
        return room
    if room < 1 or wanted > room:
        requested = prompt_tokens + max(wanted, 1)
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context_window} tokens. However, you "
            f"requested {requested} tokens ({prompt_tokens} in the prompt, "
            f"{max(wanted, 1)} in the completion). Please reduce the length of the prompt "
            "or the completion.",
            param=param,
        )
    return wanted


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability and the most likely alternatives at its position.

    `logprob` is None only for a prompt's first token, which nothing predicts.
    """

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()
    token_id: int = -1


@dataclass(frozen=True, slots=True)
class TokenStep:
    """One generated token as an engine reports it.

    `text` is the new text it completes (may be empty while a multi-byte character is open).
    The last step carries `finish_reason` (`stop` for end-of-sequence, `length` at the budget).
    """

    token_id: int
    text: str
    logprob: TokenLogprob | None = None
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Exact token counts of one request (all choices)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated alternative. `prompt_logprobs` is filled for `echo` with logprobs;
    `tool_calls` holds the calls parsed out of the text (which then holds only the rest)."""

    index: int
    text: str
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """All choices of a request and the request's usage."""

    choices: tuple[Choice, ...]
    usage: Usage

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> FinishReason:
        return self.choices[0].finish_reason


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of tool call `index` of a choice: its id and name first (once), then
    fragments of its JSON arguments, which joined give the call's `arguments`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    """A streamed piece of choice `index`: new text, its logprobs, pieces of tool calls, and at
    the end the reason."""

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


def _check_n(n: int) -> None:
    _check(1 <= n <= MAX_CHOICES, f"n must be between 1 and {MAX_CHOICES}", "n")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request addressed to a served model.

    `tools` the model may call under `tool_choice` (several calls in one answer only with
    `parallel_tool_calls`); `response_format` the shape of a text answer.
    """

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        _check_n(self.n)
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise InvalidRequestError("tools must have distinct function names", param="tools")
        if self.tool_choice.calls and not self.tools:
            raise InvalidRequestError(
                f"tool_choice '{self.tool_choice.mode.value}' needs tools", param="tool_choice"
            )
        if self.tool_choice.name is not None and self.tool_choice.name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function '{self.tool_choice.name}', which is not among "
                f"the tools ({', '.join(names)})",
                param="tool_choice",
            )

    @property
    def uses_tools(self) -> bool:
        """Whether tools are offered to the model (given, and `tool_choice` is not `none`)."""
        return bool(self.tools) and self.tool_choice.mode is not ToolChoiceMode.NONE


@dataclass(frozen=True, slots=True)
class TextRequest:
    """A plain completion request: a prompt as text or as token ids."""

    model: str
    prompt: str | tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    echo: bool = False

    def __post_init__(self) -> None:
        _check_n(self.n)
        if not self.prompt and not self.echo:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
