"""OpenAI-compatible request and response bodies (pydantic), and their mapping to the domain."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.generation import ChatRequest, Completion, SamplingParams


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part type '{part.type}' is not supported (only 'text')",
                    param="messages",
                )
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequestBody(BaseModel):
    """The subset of the OpenAI chat request this server implements; unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _max_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def to_domain(self) -> ChatRequest:
        if self.stream:
            raise InvalidRequestError("stream=true is not supported yet", param="stream")
        if self.n != 1:
            raise InvalidRequestError("only n=1 is supported", param="n")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        params = SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
        )
        messages = tuple(
            Message(Role.SYSTEM if m.role == "developer" else Role(m.role), m.text())
            for m in self.messages
        )
        return ChatRequest(model=self.model, messages=messages, params=params)


def parse_chat_request(data: Any) -> ChatCompletionRequestBody:
    """Validate a JSON body; the first problem becomes an `InvalidRequestError` naming its field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return ChatCompletionRequestBody.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        raise InvalidRequestError(f"{param}: {error['msg']}", param=param) from None


def chat_completion_response(model: str, completion: Completion) -> dict[str, Any]:
    """The OpenAI `chat.completion` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason.value,
            }
        ],
        "usage": {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "total_tokens": completion.usage.total_tokens,
        },
    }


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
