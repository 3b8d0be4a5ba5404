"""OpenAI response objects: chat completions, text completions, and their stream chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from largeforge.domain.generation import (
    Choice,
    ChoiceDelta,
    Completion,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _chat_token(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in entry.top
        ],
    }


def chat_logprobs(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {"content": [_chat_token(e) for e in entries], "refusal": None}


def text_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, `top_logprobs` as token -> logprob maps."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            None if e.logprob is None else ({e.token: e.logprob} | dict(e.top)) for e in entries
        ],
        "text_offset": offsets,
    }


def chat_completion(
    request_id: str, model: str, completion: Completion, *, index_base: int = 0
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index_base + c.index,
                "message": assistant_message(c),
                "logprobs": chat_logprobs(c.logprobs),
                "finish_reason": c.finish_reason.value,
            }
            for c in completion.choices
        ],
        "usage": usage_json(completion.usage),
    }


def assistant_message(choice: Choice) -> dict[str, Any]:
    """The reply: its text, and its tool calls (the text is null when only calls remain)."""
    if not choice.tool_calls:
        return {"role": "assistant", "content": choice.text, "refusal": None}
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in choice.tool_calls
    ]
    content = choice.text if choice.text.strip() else None
    return {"role": "assistant", "content": content, "refusal": None, "tool_calls": calls}


def tool_call_chunk(delta: ToolCallDelta) -> dict[str, Any]:
    """One entry of a chunk's `delta.tool_calls`: id, type and name first, then arguments."""
    if delta.name is not None:
        function = {"name": delta.name, "arguments": delta.arguments}
        return {"index": delta.index, "id": delta.id, "type": "function", "function": function}
    return {"index": delta.index, "function": {"arguments": delta.arguments}}


def combined_usage(completions: Sequence[Completion]) -> Usage:
    """The usage of a request made of several prompts: their sums."""
    return Usage(
        sum(c.usage.prompt_tokens for c in completions),
        sum(c.usage.completion_tokens for c in completions),
    )


def text_completion(
    request_id: str, model: str, completions: Sequence[Completion]
) -> dict[str, Any]:
    """One response for every prompt: choice index = prompt index * n + choice index."""
    choices = []
    for number, result in enumerate(completions):
        n = len(result.choices)
        for c in result.choices:
            logprobs = None
            if c.logprobs is not None:
                logprobs = text_logprobs([*(c.prompt_logprobs or ()), *c.logprobs])
            choices.append(
                {
                    "index": number * n + c.index,
                    "text": c.text,
                    "logprobs": logprobs,
                    "finish_reason": c.finish_reason.value,
                }
            )
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_json(combined_usage(completions)),
    }


class ChunkWriter:
    """Server-sent events of one streamed request, in the OpenAI chunk shapes."""

    def __init__(self, model: str, *, chat: bool, include_usage: bool, logprobs: bool) -> None:
        self._id = new_id("chatcmpl" if chat else "cmpl")
        self._model = model
        self._chat = chat
        self._include_usage = include_usage
        self._logprobs = logprobs
        self._created = int(time.time())
        self._offsets: dict[int, int] = {}

    @property
    def include_usage(self) -> bool:
        return self._include_usage

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            body["usage"] = usage_json(usage) if usage is not None else None
        return sse(body)

    def role(self, n: int) -> bytes:
        """The opening chunk of a chat stream: the assistant role for every choice."""
        return self._event(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for i in range(n)
            ]
        )

    def delta(self, delta: ChoiceDelta) -> bytes:
        """The events of one piece: its text, each tool call piece, and the finish reason on
        the last of them."""
        finish = delta.finish_reason.value if delta.finish_reason else None
        if not self._chat:
            offset = self._offsets.get(delta.index, 0)
            logprobs = text_logprobs(delta.logprobs, offset) if self._logprobs else None
            self._offsets[delta.index] = offset + sum(len(e.token) for e in delta.logprobs)
            choice = {"index": delta.index, "text": delta.text, "logprobs": logprobs}
            return self._event([choice | {"finish_reason": finish}])
        logprobs = chat_logprobs(delta.logprobs) if self._logprobs else None
        bodies: list[dict[str, Any]] = []
        if delta.text or not delta.tool_calls:
            bodies.append({"content": delta.text} if delta.text or not finish else {})
        bodies += [{"tool_calls": [tool_call_chunk(call)]} for call in delta.tool_calls]
        events = []
        for number, body in enumerate(bodies):
            last = number == len(bodies) - 1
            choice = {
                "index": delta.index,
                "delta": body,
                "logprobs": logprobs if number == 0 else None,
                "finish_reason": finish if last else None,
            }
            events.append(self._event([choice]))
        return b"".join(events)

    def usage(self, usage: Usage) -> bytes:
        """The closing usage chunk (`stream_options.include_usage`): no choices, the totals."""
        return self._event([], usage)


def sse(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


DONE = b"data: [DONE]\n\n"
