"""Tool-call evaluation rows in the OpenAI shape, read from JSON (no pydantic: the core).

A row: `messages` (an OpenAI chat list: assistant turns may carry `tool_calls`, `tool` turns
answer them; it ends with a user or tool turn) or a `prompt` text; `tools` (OpenAI function
tools; a row holding only `tools` sets them for the rows after it); `expected`: the call the
model should make (`{"name": ..., "arguments": {...}}`, the OpenAI `{"type": "function",
"function": {...}}` shape also goes, arguments as an object or JSON text), a list of calls, or
`null` (no call is the right answer); optional `tool_choice` (`auto`, the default; `none`,
`required` or `{"type": "function", "function": {"name": ...}}`), `parallel_tool_calls`
(default true), `max_tokens`, `system`.

Each row is checked whole: the expected functions are among the tools, the expected arguments
satisfy the function's parameters schema, and the schemas use only what
`largeforge.domain.schema_check` enforces (so produced calls can be checked for validity).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from largeforge.application.eval_rows import optional_max_tokens, with_system
from largeforge.domain.datasets import Message, Role
from largeforge.domain.eval_matching import ExpectedCall
from largeforge.domain.formats import RowError, json_type
from largeforge.domain.schema_check import check_instance, unsupported_keywords
from largeforge.domain.tools import EMPTY_PARAMETERS, ToolCall, ToolChoice, ToolChoiceMode, ToolSpec

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""OpenAI's rule for function names."""


@dataclass(frozen=True, slots=True)
class ToolCase:
    """One tool-call row: the conversation, the tools offered, and the calls expected (empty:
    no call is the right answer)."""

    line: int
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    expected: tuple[ExpectedCall, ...]
    tool_choice: ToolChoice = dataclasses.field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    max_tokens: int | None = None

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)


# ---------- tools ----------


def parse_tool(value: Any, field: str) -> ToolSpec:
    """`{"type": "function", "function": {"name", "description", "parameters"}}`."""
    if not isinstance(value, Mapping) or value.get("type") != "function":
        raise RowError('a tool must be {"type": "function", "function": {...}}', field)
    function = value.get("function")
    if not isinstance(function, Mapping):
        raise RowError("'function' must be an object", f"{field}.function")
    name = function.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise RowError(
            f"the function name must be 1-64 letters, digits, _ or -, got {name!r}",
            f"{field}.function.name",
        )
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise RowError("'description' must be a string", f"{field}.function.description")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = dict(EMPTY_PARAMETERS)
    where = f"{field}.function.parameters"
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object":
        raise RowError("parameters must be a JSON Schema of an object (type 'object')", where)
    unsupported = unsupported_keywords(parameters)
    if unsupported:
        raise RowError(
            f"the schema uses what the checker cannot enforce: {', '.join(unsupported)}", where
        )
    return ToolSpec(name, description, dict(parameters), bool(function.get("strict", False)))


def parse_tools(value: Any, field: str = "tools") -> tuple[ToolSpec, ...]:
    if not isinstance(value, list) or not value:
        raise RowError(f"'{field}' must be a non-empty list of tools", field)
    tools = tuple(parse_tool(item, f"{field}[{i}]") for i, item in enumerate(value))
    names = [tool.name for tool in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RowError(f"tools must have distinct names: {', '.join(duplicates)}", field)
    return tools


# ---------- messages ----------


def _arguments_object(value: Any, field: str) -> dict[str, Any]:
    """Arguments as an object, or as JSON text of one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError("the arguments are not valid JSON", field) from None
    if not isinstance(value, dict):
        raise RowError(f"the arguments must be a JSON object, got {json_type(value)}", field)
    return value


def _call(value: Any, field: str) -> tuple[str, dict[str, Any]]:
    """A call's name and decoded arguments from `{"name", "arguments"}` or the OpenAI
    `{"type": "function", "function": {...}}` shape."""
    if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping):
        value, field = value["function"], f"{field}.function"
    if not isinstance(value, Mapping):
        raise RowError(
            f'a call must be {{"name": ..., "arguments": {{...}}}}, got {json_type(value)}', field
        )
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise RowError("a call needs a 'name'", f"{field}.name")
    return name, _arguments_object(value.get("arguments", {}), f"{field}.arguments")


def parse_chat(value: Any, field: str = "messages") -> tuple[Message, ...]:
    """An OpenAI chat list with tool calls and tool results."""
    if not isinstance(value, list) or not value:
        raise RowError(f"'{field}' must be a non-empty list of messages", field)
    messages = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise RowError("each message must be an object with 'role' and 'content'", where)
        try:
            role = Role(str(item.get("role")))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise RowError(
                f"unknown role {item.get('role')!r} (allowed: {allowed})", f"{where}.role"
            ) from None
        content = item.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            got = json_type(content)
            raise RowError(f"content must be a string, got {got}", f"{where}.content")
        calls: list[ToolCall] = []
        raw_calls = item.get("tool_calls") or []
        if raw_calls and role is not Role.ASSISTANT:
            raise RowError("only assistant turns carry tool_calls", f"{where}.tool_calls")
        if not isinstance(raw_calls, list):
            raise RowError("'tool_calls' must be a list", f"{where}.tool_calls")
        for j, raw in enumerate(raw_calls):
            name, arguments = _call(raw, f"{where}.tool_calls[{j}]")
            call_id = raw.get("id") if isinstance(raw, Mapping) else None
            calls.append(ToolCall(str(call_id or f"call_{i}_{j}"), name, json.dumps(arguments)))
        answers = item.get("tool_call_id")
        speaker = item.get("name")
        if role is Role.TOOL and not isinstance(answers, str):
            raise RowError(
                "a tool turn needs the 'tool_call_id' it answers", f"{where}.tool_call_id"
            )
        if speaker is not None and not isinstance(speaker, str):
            raise RowError("'name' must be a string", f"{where}.name")
        messages.append(Message(role, content, tuple(calls), answers, speaker))
    return tuple(messages)


def _conversation(row: Mapping[str, Any]) -> tuple[Message, ...]:
    if ("messages" in row) == ("prompt" in row):
        raise RowError("give exactly one of 'messages' or 'prompt'", "messages")
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise RowError("'prompt' must be a non-empty string", "prompt")
        messages: tuple[Message, ...] = (Message(Role.USER, prompt),)
    else:
        messages = parse_chat(row["messages"])
    messages = with_system(row, messages)
    if messages[-1].role not in (Role.USER, Role.TOOL):
        raise RowError(
            f"the conversation must end with a user or tool turn, not {messages[-1].role.value}",
            "messages",
        )
    return messages


# ---------- the row ----------


def _tool_choice(value: Any) -> ToolChoice:
    if value is None:
        return ToolChoice()
    if isinstance(value, str) and value in ("auto", "none", "required"):
        return ToolChoice(ToolChoiceMode(value))
    if isinstance(value, Mapping) and value.get("type") == "function":
        function = value.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return ToolChoice(ToolChoiceMode.FUNCTION, function["name"])
    raise RowError(
        'tool_choice must be "auto", "none", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def _expected(row: Mapping[str, Any], tools: Sequence[ToolSpec]) -> tuple[ExpectedCall, ...]:
    if "expected" not in row:
        raise RowError("missing field 'expected' (a call, a list of calls, or null)", "expected")
    value = row["expected"]
    if value is None:
        return ()
    items, listed = (value, True) if isinstance(value, list) else ([value], False)
    if listed and not items:
        return ()
    by_name = {tool.name: tool for tool in tools}
    calls = []
    for i, item in enumerate(items):
        field = f"expected[{i}]" if listed else "expected"
        name, arguments = _call(item, field)
        tool = by_name.get(name)
        if tool is None:
            raise RowError(
                f"'{name}' is not among the tools ({', '.join(by_name)})", f"{field}.name"
            )
        reason = check_instance(arguments, tool.parameters)
        if reason is not None:
            raise RowError(
                f"the arguments do not fit {name}'s parameters: {reason}", f"{field}.arguments"
            )
        calls.append(ExpectedCall(name, arguments))
    return tuple(calls)


class ToolRowParser:
    """Parses the rows of one file in order; a row with only `tools` sets the tools of the
    rows after it (the tools "given once"). `tools` are the defaults before any such row."""

    def __init__(self, tools: Sequence[ToolSpec] = ()) -> None:
        self.tools = tuple(tools)

    def __call__(self, row: Mapping[str, Any], line: int) -> ToolCase | None:
        if "tools" in row and not ({"messages", "prompt", "expected"} & row.keys()):
            self.tools = parse_tools(row["tools"])
            return None
        messages = _conversation(row)
        tools = parse_tools(row["tools"]) if "tools" in row else self.tools
        if not tools:
            raise RowError("no tools: give 'tools' in the row or in a row before it", "tools")
        expected = _expected(row, tools)
        choice = _tool_choice(row.get("tool_choice"))
        if choice.name is not None and choice.name not in {t.name for t in tools}:
            raise RowError(f"tool_choice names '{choice.name}', not among the tools", "tool_choice")
        if choice.mode is ToolChoiceMode.NONE and expected:
            raise RowError("tool_choice 'none' forbids the call 'expected' asks for", "expected")
        if choice.calls and not expected:
            raise RowError(
                f"tool_choice '{choice.mode.value}' forces a call; 'expected' is null", "expected"
            )
        parallel = row.get("parallel_tool_calls", True)
        if not isinstance(parallel, bool):
            raise RowError("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
        if len(expected) > 1 and not parallel:
            raise RowError(
                "several calls are expected but parallel_tool_calls is false", "expected"
            )
        return ToolCase(line, messages, tools, expected, choice, parallel, optional_max_tokens(row))
