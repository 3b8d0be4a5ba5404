"""Generation values: sampling parameters, completions and token usage."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from largeforge.domain.datasets import Message
from largeforge.domain.errors import ContextLengthExceededError, InvalidRequestError


class FinishReason(StrEnum):
    """Why generation stopped, in the OpenAI vocabulary."""

    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding settings. `temperature == 0` means greedy.

    `max_tokens=None` lets the engine fill the rest of the context window (see `completion_budget`).
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequestError("max_tokens must be at least 1", param="max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequestError("temperature must be between 0 and 2", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError("top_p must be in (0, 1]", param="top_p")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


DEFAULT_MAX_TOKENS = 1024
"""Completion budget when a request sets none (capped by the context window)."""


def completion_budget(params: SamplingParams, prompt_tokens: int, context_window: int) -> int:
    """Tokens to generate: the requested `max_tokens`, else what the context has room for.

    Raises `ContextLengthExceededError` (naming the counts) when the prompt and the requested
    completion do not fit the context window.
    """
    room = context_window - prompt_tokens
    wanted = params.max_tokens if params.max_tokens is not None else min(DEFAULT_MAX_TOKENS, room)
    if room < 1 or wanted > room:
        requested = prompt_tokens + max(wanted, 1)
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context_window} tokens. However, you "
            f"requested {requested} tokens ({prompt_tokens} in the messages, "
            f"{max(wanted, 1)} in the completion). Please reduce the length of the messages "
            "or the completion.",
            param="messages",
        )
    return wanted


@dataclass(frozen=True, slots=True)
class Usage:
    """Exact token counts of one request."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """Generated text and why it ended."""

    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat completion request addressed to a served model."""

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams

    def __post_init__(self) -> None:
        if not self.messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
