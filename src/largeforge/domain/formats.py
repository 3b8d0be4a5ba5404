"""Dataset row formats: detection, parsing into domain records, and conversion back to rows.

Pure functions over plain `dict` rows (already decoded from JSON, Parquet, CSV ...). Every problem
is a `RowError` naming the field, so readers can report it with the row's line number.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from largeforge.domain.datasets import (
    Conversation,
    LabeledCompletion,
    Message,
    PreferencePair,
    PromptExample,
    Record,
    Role,
    SftExample,
    TextExample,
)
from largeforge.domain.formats_base import RowError as RowError
from largeforge.domain.formats_base import json_type as json_type
from largeforge.domain.tool_messages import (
    function_call_turn,
    function_call_value,
    observation_turns,
    parse_chat,
    parse_tools,
    tool_calls_row,
)
from largeforge.domain.tools import ToolCall


class DatasetFormat(StrEnum):
    """The row layouts LargeForge reads."""

    ALPACA = "alpaca"
    SHAREGPT = "sharegpt"
    MESSAGES = "messages"
    PROMPT_COMPLETION = "prompt_completion"
    PREFERENCE = "preference"
    TEXT = "text"
    UNPAIRED = "unpaired"
    """KTO's unpaired rows: `prompt`, `completion` and a boolean `label` (desirable or not)."""
    PROMPT = "prompt"
    """Prompts without answers: Alpaca rows without `output`, `{"prompt": ...}` alone, or
    messages ending with a user turn; `reference`, `answer` or `output` is a reference answer."""


SHAREGPT_ROLES = {
    "human": Role.USER,
    "user": Role.USER,
    "gpt": Role.ASSISTANT,
    "assistant": Role.ASSISTANT,
    "chatgpt": Role.ASSISTANT,
    "model": Role.ASSISTANT,
    "system": Role.SYSTEM,
}


def apply_columns(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """Rename source columns to canonical ones: `columns` maps canonical -> source name."""
    if not columns:
        return dict(row)
    renamed = {k: v for k, v in row.items() if k not in columns.values()}
    for canonical, source in columns.items():
        if source in row:
            renamed[canonical] = row[source]
    return renamed


def detect_row_format(row: Mapping[str, Any]) -> DatasetFormat | None:
    """The format a single row looks like, or None."""
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        return DatasetFormat.PREFERENCE
    if "messages" in keys:
        return DatasetFormat.PROMPT if _ends_with_user(row["messages"]) else DatasetFormat.MESSAGES
    if "conversations" in keys:
        return DatasetFormat.SHAREGPT
    if "instruction" in keys and "output" not in keys:
        return DatasetFormat.PROMPT
    if "instruction" in keys or ("output" in keys and "completion" not in keys):
        return DatasetFormat.ALPACA
    if {"prompt", "completion", "label"} <= keys:
        return DatasetFormat.UNPAIRED
    if {"prompt", "completion"} <= keys:
        return DatasetFormat.PROMPT_COMPLETION
    if "prompt" in keys:
        return DatasetFormat.PROMPT
    if "text" in keys:
        return DatasetFormat.TEXT
    return None


def _ends_with_user(messages: Any) -> bool:
    return (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], Mapping)
        and messages[-1].get("role") == Role.USER.value
    )


@dataclass(frozen=True, slots=True)
class Detection:
    """Which format the sampled rows vote for, by how many of them, and the tool-calling
    convention seen in them (empty when no row uses tools)."""

    format: DatasetFormat | None
    votes: int
    sampled: int
    tools: str = ""

    def describe(self) -> str:
        if self.format is None:
            return f"no known format in {self.sampled} sampled rows"
        tools = f"; tool calls: {self.tools}" if self.tools else ""
        return f"{self.format.value} ({self.votes} of {self.sampled} sampled rows{tools})"


OPENAI_TOOLS = "OpenAI tools / tool_calls / tool messages"
SHAREGPT_TOOLS = "ShareGPT function_call / observation turns"


def tool_convention(row: Mapping[str, Any]) -> str:
    """The tool-calling convention a row uses, or ''."""
    turns = row.get("conversations")
    if isinstance(turns, list):
        speakers = {t.get("from") for t in turns if isinstance(t, Mapping)}
        if speakers & {"function_call", "observation"} or row.get("tools"):
            return SHAREGPT_TOOLS
        return ""
    messages = row.get("messages")
    if isinstance(messages, list) and any(
        isinstance(m, Mapping) and (m.get("tool_calls") or m.get("role") == "tool")
        for m in messages
    ):
        return OPENAI_TOOLS
    return OPENAI_TOOLS if row.get("tools") else ""


def detect_format(rows: Iterable[Any]) -> Detection:
    """Majority vote of `detect_row_format` over the rows that are objects."""
    counts: Counter[DatasetFormat] = Counter()
    conventions: Counter[str] = Counter()
    sampled = 0
    for row in rows:
        sampled += 1
        if isinstance(row, Mapping) and (fmt := detect_row_format(row)) is not None:
            counts[fmt] += 1
            if convention := tool_convention(row):
                conventions[convention] += 1
    if not counts:
        return Detection(None, 0, sampled)
    fmt, votes = counts.most_common(1)[0]
    tools = ""
    if conventions:
        convention, rows_with = conventions.most_common(1)[0]
        tools = f"{convention} in {rows_with} rows"
    return Detection(fmt, votes, sampled, tools)


def _text(row: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = row.get(name)
    if value is None and not required:
        return ""
    if name not in row and required:
        raise RowError(f"missing field '{name}'", name, kind="missing_field")
    if not isinstance(value, str):
        got = json_type(value)
        raise RowError(f"'{name}' must be a string, got {got}", name, kind="wrong_type")
    return value


def parse_message_list(value: Any, field: str) -> tuple[Message, ...]:
    """OpenAI-style `[{"role", "content"}, ...]` (content may be text parts), with tool calls
    and tool results (`largeforge.domain.tool_messages.parse_chat`)."""
    return parse_chat(value, field)


def _messages_or_text(value: Any, field: str, role: Role) -> tuple[Message, ...]:
    if isinstance(value, str):
        return (Message(role, value),)
    if isinstance(value, list):
        return parse_message_list(value, field)
    raise RowError(
        f"'{field}' must be a string or a list of messages, got {json_type(value)}",
        field,
        kind="wrong_type",
    )


def parse_alpaca(row: Mapping[str, Any]) -> SftExample:
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    output = _text(row, "output")
    system = _text(row, "system", required=False)
    prompt = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction.strip()
    if not prompt:
        raise RowError("empty instruction", "instruction", kind="empty_field")
    messages = [Message(Role.SYSTEM, system)] if system.strip() else []
    messages += [Message(Role.USER, prompt), Message(Role.ASSISTANT, output)]
    return SftExample(Conversation(tuple(messages)))


def parse_sharegpt(row: Mapping[str, Any]) -> SftExample:
    """`conversations` of `{"from", "value"}` turns; LLaMA-Factory's `function_call` and
    `observation` turns with a `tools` column are tool calls and their results."""
    if "conversations" not in row:
        raise RowError("missing field 'conversations'", "conversations", kind="missing_field")
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError(
            "'conversations' must be a non-empty list", "conversations", kind="wrong_type"
        )
    messages: list[Message] = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append(Message(Role.SYSTEM, row["system"]))
    pending: tuple[ToolCall, ...] = ()
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise RowError(
                "each turn must be an object with 'from' and 'value'", where, kind="wrong_type"
            )
        speaker = turn.get("from")
        value = turn.get("value")
        if speaker == "function_call":
            call = function_call_turn(value, f"{where}.value", i)
            pending = call.tool_calls
            messages.append(call)
            continue
        if speaker == "observation":
            results = observation_turns(value, f"{where}.value", pending)
            messages += results
            pending = pending[len(results) :]
            continue
        if speaker not in SHAREGPT_ROLES:
            allowed = ", ".join(sorted([*SHAREGPT_ROLES, "function_call", "observation"]))
            raise RowError(
                f"unknown speaker {speaker!r} (allowed: {allowed})",
                f"{where}.from",
                kind="unknown_role",
            )
        if not isinstance(value, str):
            raise RowError(
                f"'value' must be a string, got {json_type(value)}",
                f"{where}.value",
                kind="wrong_type",
            )
        messages.append(Message(SHAREGPT_ROLES[speaker], value))
    return SftExample(Conversation(tuple(messages)), tools=parse_tools(row.get("tools")))


def parse_messages(row: Mapping[str, Any]) -> SftExample:
    if "messages" not in row:
        raise RowError("missing field 'messages'", "messages", kind="missing_field")
    messages = parse_message_list(row.get("messages"), "messages")
    return SftExample(Conversation(messages), tools=parse_tools(row.get("tools")))


def parse_prompt_completion(row: Mapping[str, Any]) -> SftExample:
    """A string prompt is a user turn and a string completion an assistant turn."""
    for name in ("prompt", "completion"):
        if name not in row:
            raise RowError(f"missing field '{name}'", name, kind="missing_field")
    prompt = _messages_or_text(row["prompt"], "prompt", Role.USER)
    completion = _messages_or_text(row["completion"], "completion", Role.ASSISTANT)
    return SftExample(Conversation(prompt + completion))


def parse_preference(row: Mapping[str, Any]) -> PreferencePair:
    """`prompt` + `chosen`/`rejected`; without `prompt`, both sides share a leading prefix."""
    for name in ("chosen", "rejected"):
        if name not in row:
            raise RowError(f"missing field '{name}'", name, kind="missing_field")
    chosen = _messages_or_text(row.get("chosen"), "chosen", Role.ASSISTANT)
    rejected = _messages_or_text(row.get("rejected"), "rejected", Role.ASSISTANT)
    if "prompt" in row:
        prompt = _messages_or_text(row["prompt"], "prompt", Role.USER)
    else:  # implicit prompt: the shared prefix of two full conversations
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            raise RowError(
                "missing field 'prompt' (and no shared prefix)", "prompt", kind="missing_field"
            )
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


_LABEL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def parse_unpaired(row: Mapping[str, Any]) -> LabeledCompletion:
    """`prompt` + `completion` (strings or messages) + `label`: true for a desirable
    completion, false for an undesirable one (1/0 and "true"/"false", as CSV files hold it)."""
    for name in ("prompt", "completion", "label"):
        if name not in row:
            raise RowError(f"missing field '{name}'", name, kind="missing_field")
    prompt = _messages_or_text(row["prompt"], "prompt", Role.USER)
    completion = _messages_or_text(row["completion"], "completion", Role.ASSISTANT)
    return LabeledCompletion(prompt, completion, _label(row["label"]))


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABEL_TEXT:
        return _LABEL_TEXT[value.strip().lower()]
    raise RowError(f"'label' must be true or false, got {value!r}", "label", kind="wrong_type")


REFERENCE_FIELDS = ("reference", "answer", "output")
"""Fields read as a prompt's reference answer, first found wins."""

_PROMPT_FIELDS = {"prompt", "instruction", "input", "system", "messages", "conversations",
                  "completion", "chosen", "rejected", "label", "tools",
                  *REFERENCE_FIELDS}  # fmt: skip


def parse_prompt(row: Mapping[str, Any]) -> PromptExample:
    """Any conversational row as a prompt: `prompt` (a string or messages), an Alpaca
    `instruction` (+ `input`, `system`), or `messages`/`conversations`. A conversation that
    ends with an assistant turn gives its user turns as the prompt and that turn as the
    reference, so full SFT rows serve as seeds too."""
    reference = _reference(row)
    if "messages" in row or "conversations" in row:
        field = "messages" if "messages" in row else "conversations"
        if field == "messages":
            messages = parse_message_list(row.get("messages"), "messages")
        else:
            messages = parse_sharegpt(row).conversation.messages
        if messages[-1].role is Role.ASSISTANT and len(messages) > 1:
            if reference is None and messages[-1].content.strip():
                reference = messages[-1].content
            messages = messages[:-1]
    elif "instruction" in row:
        field = "instruction"
        instruction = _text(row, "instruction")
        extra = _text(row, "input", required=False)
        system = _text(row, "system", required=False)
        text = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction
        messages = (Message(Role.SYSTEM, system),) if system.strip() else ()
        messages += (Message(Role.USER, text),)
    elif "prompt" in row:
        field = "prompt"
        messages = _messages_or_text(row["prompt"], "prompt", Role.USER)
        if reference is None and isinstance(row.get("completion"), str):
            reference = row["completion"]
    else:
        raise RowError(
            "no prompt: expected 'prompt', 'instruction', 'messages' or 'conversations'",
            "prompt",
            kind="missing_field",
        )
    example = PromptExample(
        messages, reference, _metadata(row), tools=parse_tools(row.get("tools"))
    )
    check_prompt_turns(example.prompt, field)
    return example


def check_prompt_turns(messages: tuple[Message, ...], field: str = "prompt") -> None:
    """An optional leading system message, then user/assistant turns ending with a non-empty
    user turn."""
    turns = dialogue_turns(messages, field)
    if not any(m.role is Role.USER for m in turns):
        raise RowError("no user turn", field, kind="no_user_turn")
    if turns[-1].role is not Role.USER:
        raise RowError("the prompt must end with a user turn", field, kind="no_user_turn")
    check_alternation(turns, field)
    if not turns[-1].content.strip():
        raise RowError("empty prompt (the last user turn has no text)", field, kind="empty_prompt")


def _reference(row: Mapping[str, Any]) -> str | None:
    for name in REFERENCE_FIELDS:
        if name in row and row[name] is not None:
            value = row[name]
            if not isinstance(value, str):
                raise RowError(
                    f"'{name}' must be a string, got {json_type(value)}", name, kind="wrong_type"
                )
            return value if value.strip() else None
    return None


def _metadata(row: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(k), str(v))
        for k, v in row.items()
        if k not in _PROMPT_FIELDS and isinstance(v, str | int | float | bool)
    )


def parse_text(row: Mapping[str, Any]) -> TextExample:
    return TextExample(_text(row, "text"))


PARSERS: dict[DatasetFormat, Callable[[Mapping[str, Any]], Record]] = {
    DatasetFormat.ALPACA: parse_alpaca,
    DatasetFormat.SHAREGPT: parse_sharegpt,
    DatasetFormat.MESSAGES: parse_messages,
    DatasetFormat.PROMPT_COMPLETION: parse_prompt_completion,
    DatasetFormat.PREFERENCE: parse_preference,
    DatasetFormat.UNPAIRED: parse_unpaired,
    DatasetFormat.TEXT: parse_text,
    DatasetFormat.PROMPT: parse_prompt,
}


def parse_row(row: Any, fmt: DatasetFormat) -> Record:
    """Parse one row in `fmt` into a record; raises `RowError`."""
    if not isinstance(row, Mapping):
        raise RowError(f"row must be an object, got {json_type(row)}", kind="wrong_type")
    return PARSERS[fmt](row)


def to_row(record: Record, fmt: DatasetFormat) -> dict[str, Any]:
    """Write an SFT record as a row of `fmt` (messages, alpaca or sharegpt)."""
    if not isinstance(record, SftExample):
        raise RowError(f"only conversations convert to {fmt.value}", kind="unconvertible")
    messages = record.conversation.messages
    tools: dict[str, Any] = {"tools": [t.as_dict() for t in record.tools]} if record.tools else {}
    if fmt is DatasetFormat.MESSAGES:
        return {**tools, "messages": [_message_row(m) for m in messages]}
    if fmt is DatasetFormat.SHAREGPT:
        if tools:  # LLaMA-Factory writes the column as JSON text
            tools = {"tools": json.dumps(tools["tools"], ensure_ascii=False)}
        return {"conversations": [_sharegpt_turn(m) for m in messages], **tools}
    if record.tools or any(m.tool_calls or m.role is Role.TOOL for m in messages):
        raise RowError(
            f"tool calls do not convert to {fmt.value}: use messages or sharegpt",
            "messages",
            kind="unconvertible",
        )
    if fmt is DatasetFormat.ALPACA:
        turns = [m for m in messages if m.role is not Role.SYSTEM]
        if len(turns) != 2:
            raise RowError(
                "only single-turn conversations convert to alpaca", "messages", kind="unconvertible"
            )
        row = {"instruction": turns[0].content, "input": "", "output": turns[1].content}
        if messages[0].role is Role.SYSTEM:
            row["system"] = messages[0].content
        return row
    raise RowError(
        f"cannot convert to {fmt.value}: use messages, alpaca or sharegpt", kind="unconvertible"
    )


def _message_row(message: Message) -> dict[str, Any]:
    """A message in the OpenAI row shape: calls with their arguments as JSON text."""
    row = message.as_dict()
    if message.tool_calls:
        row["content"] = message.content or None
        row["tool_calls"] = tool_calls_row(message.tool_calls)
    return row


_SHAREGPT_NAMES = {Role.USER: "human", Role.ASSISTANT: "gpt", Role.SYSTEM: "system"}


def _sharegpt_turn(message: Message) -> dict[str, str]:
    if message.role is Role.TOOL:
        return {"from": "observation", "value": message.content}
    if message.tool_calls:
        if message.content.strip():
            raise RowError(
                "a turn with both text and calls does not convert to sharegpt",
                "messages",
                kind="unconvertible",
            )
        return {"from": "function_call", "value": function_call_value(message.tool_calls)}
    return {"from": _SHAREGPT_NAMES[message.role], "value": message.content}


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """One dataset of a run: where it is, its format (None = detect), column renames, and
    how much of it to use when several are mixed (`weight` relative share, or `count` rows)."""

    source: str
    format: DatasetFormat | None = None
    columns: tuple[tuple[str, str], ...] = ()
    weight: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.weight is not None and self.weight <= 0:
            raise ValueError(f"{self.source}: weight must be positive")
        if self.count is not None and self.count <= 0:
            raise ValueError(f"{self.source}: count must be positive")
        if self.weight is not None and self.count is not None:
            raise ValueError(f"{self.source}: give weight or count, not both")

    @property
    def column_map(self) -> dict[str, str]:
        return dict(self.columns)


def dialogue_turns(messages: Sequence[Message], field: str) -> list[Message]:
    """The turns after an optional leading system message (a system message elsewhere is a
    `RowError`)."""
    if any(m.role is Role.SYSTEM for m in messages[1:]):
        raise RowError("a system message may only come first", field, kind="bad_turn_order")
    return [m for m in messages if m.role is not Role.SYSTEM]


def check_alternation(turns: Sequence[Message], field: str) -> None:
    """Turns (system messages left out) alternate user/assistant, starting with user."""
    for i, message in enumerate(turns):
        expected = Role.USER if i % 2 == 0 else Role.ASSISTANT
        if message.role is not expected:
            raise RowError(
                f"turns must alternate user/assistant, starting with user (turn {i + 1} is "
                f"{message.role.value})",
                field,
                kind="bad_turn_order",
            )
