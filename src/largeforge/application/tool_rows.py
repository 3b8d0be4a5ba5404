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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from largeforge.application.eval_rows import optional_max_tokens, with_system
from largeforge.domain.datasets import Message, Role
from largeforge.domain.eval_matching import ExpectedCall
from largeforge.domain.formats import RowError
from largeforge.domain.schema_check import check_instance
from largeforge.domain.tool_messages import check_tool_use, parse_call, parse_chat
from largeforge.domain.tool_messages import parse_tools as parse_tool_list
from largeforge.domain.tools import ToolChoice, ToolChoiceMode, ToolSpec


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


def parse_tools(value: Any, field: str = "tools") -> tuple[ToolSpec, ...]:
    """A non-empty tool list whose schemas `check_instance` can check whole."""
    tools = parse_tool_list(value, field, checkable=True)
    if not tools:
        raise RowError(f"'{field}' must be a non-empty list of tools", field)
    return tools


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
        name, arguments = parse_call(item, field)
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
        check_tool_use(messages, tools, require_results=False)
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
