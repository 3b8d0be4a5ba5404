"""Read JSON Lines datasets in the Alpaca and OpenAI-messages formats, row by row."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from largeforge.domain.datasets import (
    Conversation,
    DatasetIssue,
    LoadedDataset,
    Message,
    Role,
    SftExample,
)
from largeforge.domain.errors import DatasetError

SAMPLE_DATASET = "sample"
"""Name of the bundled sample dataset (Python documentation Q&A, PSF licensed)."""


def sample_dataset_path() -> Path:
    """Path of the bundled sample chat dataset inside the installed package."""
    return Path(str(resources.files("largeforge.resources.data") / "sample_chat.jsonl"))


class RowError(ValueError):
    """A row cannot be used; `field` names the culprit."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


def parse_messages_row(row: dict[str, Any]) -> Conversation:
    """OpenAI messages: `{"messages": [{"role": ..., "content": ...}, ...]}`."""
    raw = row["messages"]
    if not isinstance(raw, list) or not raw:
        raise RowError("'messages' must be a non-empty list", "messages")
    messages = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise RowError("each message must be an object with 'role' and 'content'", where)
        role = item.get("role")
        content = item.get("content")
        try:
            parsed_role = Role(role) if isinstance(role, str) else None
        except ValueError:
            parsed_role = None
        if parsed_role is None:
            allowed = ", ".join(r.value for r in Role)
            raise RowError(f"unknown role {role!r} (allowed: {allowed})", f"{where}.role")
        if not isinstance(content, str):
            raise RowError("content must be a string", f"{where}.content")
        if parsed_role is Role.ASSISTANT and not content.strip():
            raise RowError("empty assistant turn", f"{where}.content")
        messages.append(Message(parsed_role, content))
    return Conversation(tuple(messages))


def parse_alpaca_row(row: dict[str, Any]) -> Conversation:
    """Alpaca: `instruction`, optional `input`, `output`, optional `system`."""
    for name in ("instruction", "output"):
        if not isinstance(row.get(name), str):
            raise RowError(f"'{name}' must be a string", name)
    for name in ("input", "system"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise RowError(f"'{name}' must be a string", name)
    if not row["output"].strip():
        raise RowError("empty output (the assistant turn)", "output")
    prompt = row["instruction"].strip()
    if row.get("input"):
        prompt = f"{prompt}\n\n{row['input'].strip()}"
    if not prompt:
        raise RowError("empty instruction", "instruction")
    messages = []
    if row.get("system"):
        messages.append(Message(Role.SYSTEM, row["system"]))
    messages += [Message(Role.USER, prompt), Message(Role.ASSISTANT, row["output"])]
    return Conversation(tuple(messages))


def detect_row_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "messages"
    if "instruction" in row or "output" in row:
        return "alpaca"
    raise RowError(
        f"unknown row format with keys {sorted(row)}: expected 'messages' or 'instruction'/'output'"
    )


def check_turns(conversation: Conversation) -> None:
    """An optional system message, then alternating user/assistant turns ending with assistant."""
    turns = [m for m in conversation.messages if m.role is not Role.SYSTEM]
    if any(m.role is Role.SYSTEM for m in conversation.messages[1:]):
        raise RowError("a system message may only come first", "messages")
    if not turns or turns[-1].role is not Role.ASSISTANT:
        raise RowError("the conversation must end with an assistant turn", "messages")
    for i, message in enumerate(turns):
        expected = Role.USER if i % 2 == 0 else Role.ASSISTANT
        if message.role is not expected:
            raise RowError("turns must alternate user/assistant, starting with user", "messages")


_PARSERS = {"messages": parse_messages_row, "alpaca": parse_alpaca_row}


class JsonlDatasetReader:
    """Reads `.jsonl` files (or the bundled `sample`), skipping and reporting bad rows."""

    def read(self, source: str) -> LoadedDataset:
        path = sample_dataset_path() if source == SAMPLE_DATASET else Path(source).expanduser()
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {source}")
        if path.suffix not in {".jsonl", ".ndjson"}:
            raise DatasetError(f"{source}: unsupported file type '{path.suffix}' (use .jsonl)")
        examples: list[SftExample] = []
        issues: list[DatasetIssue] = []
        formats: Counter[str] = Counter()
        name = path.name
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    issues.append(DatasetIssue(name, line_no, f"invalid JSON: {exc.msg}"))
                    continue
                try:
                    if not isinstance(row, dict):
                        raise RowError("row must be a JSON object")
                    fmt = detect_row_format(row)
                    conversation = _PARSERS[fmt](row)
                    check_turns(conversation)
                except RowError as exc:
                    issues.append(DatasetIssue(name, line_no, str(exc), field=exc.field))
                    continue
                formats[fmt] += 1
                examples.append(SftExample(conversation, source=f"{name}:{line_no}"))
        detected = "+".join(sorted(formats)) if formats else "unknown"
        return LoadedDataset(tuple(examples), tuple(issues), detected)
