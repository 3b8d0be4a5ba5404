"""Streamed chat chunks (OpenAI `chat.completion.chunk` dicts) joined into one completion."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def assemble_chunks(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The `chat.completion` the chunks add up to: per choice index the content, the tool
    calls (their argument pieces joined by call index), the logprobs and the finish reason;
    the usage of the chunk that carries it."""
    choices: dict[int, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    usage = None
    for chunk in chunks:
        if not head:
            head = {k: chunk.get(k) for k in ("id", "created", "model")}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for piece in chunk.get("choices") or ():
            index = int(piece.get("index", 0))
            choice = choices.setdefault(
                index,
                {"content": [], "calls": {}, "logprobs": [], "finish_reason": None},
            )
            delta = piece.get("delta") or {}
            if delta.get("content"):
                choice["content"].append(delta["content"])
            for call in delta.get("tool_calls") or ():
                _add_call(choice["calls"], call)
            logprobs = piece.get("logprobs") or {}
            choice["logprobs"].extend(logprobs.get("content") or ())
            if piece.get("finish_reason"):
                choice["finish_reason"] = piece["finish_reason"]
    return {
        **head,
        "object": "chat.completion",
        "choices": [_choice(index, choices[index]) for index in sorted(choices)],
        "usage": usage,
    }


def _add_call(calls: dict[int, dict[str, Any]], piece: Mapping[str, Any]) -> None:
    index = int(piece.get("index", len(calls)))
    call = calls.setdefault(
        index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if piece.get("id"):
        call["id"] = piece["id"]
    function = piece.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def _choice(index: int, parts: Mapping[str, Any]) -> dict[str, Any]:
    calls = [parts["calls"][i] for i in sorted(parts["calls"])]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts["content"]) or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "index": index,
        "message": message,
        "logprobs": {"content": parts["logprobs"]} if parts["logprobs"] else None,
        "finish_reason": parts["finish_reason"],
    }
