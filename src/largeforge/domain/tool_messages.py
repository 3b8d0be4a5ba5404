"""Tool-use rows: tool declarations, calls and chat messages that carry them.

Two conventions are read. OpenAI's: `tools` (a list of `{"type": "function", "function": {...}}`),
assistant messages with `tool_calls` (arguments as JSON text or an object, `content` often null)
and `tool` messages that answer a call by `tool_call_id`. LLaMA-Factory's ShareGPT: a `tools`
column (a JSON string or a list, of OpenAI tools or bare `{name, description, parameters}`
functions), `function_call` turns whose value is a call as JSON text (or a list of calls) and
`observation` turns with the result.

Pure functions; every problem is a `RowError` naming the field. A tool message without an id
answers the oldest call not yet answered (of its `name`, when it has one), as LLaMA-Factory's
observations do; whether every call is answered is checked by `check_tool_use`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from largeforge.domain.datasets import Message, Role
from largeforge.domain.formats_base import RowError, join_parts, json_type, role_of
from largeforge.domain.schema_check import check_instance, unsupported_keywords
from largeforge.domain.tools import EMPTY_PARAMETERS, ToolCall, ToolSpec

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
"""Function names: OpenAI's rule (letters, digits, `_` and `-`, at most 64), dots allowed."""


# ---------- declarations ----------


def parse_tool(value: Any, field: str, *, checkable: bool = False) -> ToolSpec:
    """One tool: `{"type": "function", "function": {...}}` or the bare function object.

    `checkable` also refuses parameter schemas with keywords `check_instance` cannot enforce
    (evaluation needs every produced call checked whole)."""
    if isinstance(value, Mapping) and "function" in value:
        if value.get("type", "function") != "function":
            raise RowError(
                f"only function tools are supported, got type {value.get('type')!r}",
                f"{field}.type",
                kind="invalid_tools",
            )
        value, field = value["function"], f"{field}.function"
    if not isinstance(value, Mapping):
        raise RowError(
            f'a tool must be {{"type": "function", "function": {{...}}}}, got {json_type(value)}',
            field,
            kind="invalid_tools",
        )
    name = value.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise RowError(
            f"the function name must be 1-64 letters, digits, _, - or ., got {name!r}",
            f"{field}.name",
            kind="invalid_tools",
        )
    description = value.get("description") or ""
    if not isinstance(description, str):
        raise RowError("'description' must be a string", f"{field}.description", "invalid_tools")
    parameters = value.get("parameters")
    if parameters is None:
        parameters = dict(EMPTY_PARAMETERS)
    where = f"{field}.parameters"
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object":
        raise RowError(
            "parameters must be a JSON Schema of an object (type 'object')", where, "invalid_tools"
        )
    if checkable and (unsupported := unsupported_keywords(parameters)):
        raise RowError(
            f"the schema uses what the checker cannot enforce: {', '.join(unsupported)}",
            where,
            kind="invalid_tools",
        )
    return ToolSpec(name, description, dict(parameters), bool(value.get("strict", False)))


def parse_tools(
    value: Any, field: str = "tools", *, checkable: bool = False
) -> tuple[ToolSpec, ...]:
    """A list of tools, or JSON text of one (LLaMA-Factory's column); null or empty: none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError(f"'{field}' is not valid JSON", field, kind="invalid_tools") from None
    if not isinstance(value, list):
        raise RowError(
            f"'{field}' must be a list of tools, got {json_type(value)}", field, "invalid_tools"
        )
    tools = tuple(
        parse_tool(item, f"{field}[{i}]", checkable=checkable) for i, item in enumerate(value)
    )
    names = [tool.name for tool in tools]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise RowError(
            f"tools must have distinct names: {', '.join(duplicates)}", field, "invalid_tools"
        )
    return tools


# ---------- calls ----------


def arguments_object(value: Any, field: str) -> dict[str, Any]:
    """Arguments as an object, or as JSON text of one (empty text is `{}`)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RowError(
                f"the arguments are not valid JSON ({exc.args[0] if exc.args else exc})",
                field,
                kind="invalid_arguments",
            ) from None
    if not isinstance(value, dict):
        raise RowError(
            f"the arguments must be a JSON object, got {json_type(value)}",
            field,
            kind="invalid_arguments",
        )
    return value


def parse_call(value: Any, field: str) -> tuple[str, dict[str, Any]]:
    """A call's name and decoded arguments, from `{"name", "arguments"}` (or `parameters`, as
    Llama 3.1 writes it) or the OpenAI `{"type": "function", "function": {...}}` shape."""
    if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping):
        value, field = value["function"], f"{field}.function"
    if not isinstance(value, Mapping):
        raise RowError(
            f'a call must be {{"name": ..., "arguments": {{...}}}}, got {json_type(value)}',
            field,
            kind="invalid_call",
        )
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise RowError("a call needs a 'name'", f"{field}.name", kind="invalid_call")
    key = "arguments" if "arguments" in value or "parameters" not in value else "parameters"
    return name, arguments_object(value.get(key, {}), f"{field}.{key}")


def _tool_call(raw: Any, field: str, default_id: str) -> ToolCall:
    name, arguments = parse_call(raw, field)
    call_id = raw.get("id") if isinstance(raw, Mapping) else None
    text = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(str(call_id) if call_id else default_id, name, text)


class _Answers:
    """Calls not yet answered, so a tool message without an id can be matched to one."""

    def __init__(self) -> None:
        self.pending: list[ToolCall] = []

    def called(self, calls: Sequence[ToolCall]) -> None:
        self.pending = list(calls)

    def answer(self, call_id: str | None, name: str | None) -> str | None:
        """The id a tool message answers (its own when given)."""
        if call_id is None:
            match = next((c for c in self.pending if name in (None, c.name)), None)
            call_id = match.id if match is not None else None
        self.pending = [c for c in self.pending if c.id != call_id]
        return call_id


def parse_chat(value: Any, field: str = "messages") -> tuple[Message, ...]:
    """An OpenAI chat list; assistant turns may carry `tool_calls`, `tool` turns answer them.

    Content may be a string or text parts; it may be null on an assistant turn with calls."""
    if not isinstance(value, list) or not value:
        raise RowError(f"'{field}' must be a non-empty list of messages", field, kind="wrong_type")
    messages = []
    answers = _Answers()
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            raise RowError(
                "each message must be an object with 'role' and 'content'", where, kind="wrong_type"
            )
        role = role_of(item.get("role"), f"{where}.role")
        raw_calls = item.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise RowError("'tool_calls' must be a list", f"{where}.tool_calls", "invalid_call")
        if raw_calls and role is not Role.ASSISTANT:
            raise RowError(
                "only assistant turns carry tool_calls", f"{where}.tool_calls", "bad_turn_order"
            )
        content = item.get("content")
        if isinstance(content, list):
            content = join_parts(content, f"{where}.content")
        if content is None and raw_calls:
            content = ""
        if not isinstance(content, str):
            raise RowError(
                f"content must be a string, got {json_type(content)}",
                f"{where}.content",
                kind="wrong_type",
            )
        calls = tuple(
            _tool_call(raw, f"{where}.tool_calls[{j}]", f"call_{i}_{j}")
            for j, raw in enumerate(raw_calls)
        )
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise RowError("'name' must be a string", f"{where}.name", kind="wrong_type")
        call_id = item.get("tool_call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise RowError("'tool_call_id' must be a string", f"{where}.tool_call_id", "wrong_type")
        if calls:
            answers.called(calls)
        if role is Role.TOOL:
            call_id = answers.answer(call_id, name)
        messages.append(Message(role, content, calls, call_id if role is Role.TOOL else None, name))
    return tuple(messages)


# ---------- LLaMA-Factory's function_call / observation turns ----------


def function_call_turn(value: Any, field: str, index: int) -> Message:
    """A ShareGPT `function_call` turn: JSON text of a call or of a list of calls."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowError(
                "a function_call turn must hold a call as JSON text "
                '({"name": ..., "arguments": {...}})',
                field,
                kind="invalid_arguments",
            ) from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise RowError("a function_call turn holds no call", field, kind="invalid_call")
    calls = tuple(
        _tool_call(raw, field if len(items) == 1 else f"{field}[{j}]", f"call_{index}_{j}")
        for j, raw in enumerate(items)
    )
    return Message(Role.ASSISTANT, "", calls)


def observation_turns(value: Any, field: str, pending: Sequence[ToolCall]) -> list[Message]:
    """A ShareGPT `observation` turn: the results of the calls just made, in order (a JSON
    list of as many results as there were calls gives one result each)."""
    if not isinstance(value, str):
        raise RowError(
            f"'value' must be a string, got {json_type(value)}", field, kind="wrong_type"
        )
    results: list[str] = [value]
    if len(pending) > 1:
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, list) and len(decoded) == len(pending):
            results = [r if isinstance(r, str) else json.dumps(r) for r in decoded]
    messages = []
    for k, result in enumerate(results):
        call = pending[k] if k < len(pending) else None
        messages.append(
            Message(Role.TOOL, result, (), call.id if call else None, call.name if call else None)
        )
    return messages


def tool_calls_row(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Calls in the OpenAI row shape (arguments as JSON text)."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def function_call_value(calls: Sequence[ToolCall]) -> str:
    """Calls as a ShareGPT `function_call` value."""
    items = [{"name": c.name, "arguments": c.arguments_value()} for c in calls]
    return json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)


# ---------- checks ----------


def uses_tools(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> bool:
    """Whether a conversation has tools, calls or tool results."""
    return bool(tools) or any(m.tool_calls or m.role is Role.TOOL for m in messages)


def check_tool_use(
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    field: str = "messages",
    *,
    require_results: bool = True,
) -> None:
    """Every call names a declared function with arguments that fit its schema, every tool
    message answers a call, and (with `require_results`) every call is answered before the next
    user turn. A conversation may end with calls (the row trains the call)."""
    declared = {tool.name: tool for tool in tools}
    pending: dict[str, ToolCall] = {}
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if message.role is Role.USER and pending and require_results:
            _unanswered(pending, where)
        if message.role is Role.USER:
            pending.clear()
        for j, call in enumerate(message.tool_calls):
            spot = f"{where}.tool_calls[{j}].function"
            spec = declared.get(call.name)
            if spec is None:
                offered = ", ".join(declared) or "none"
                raise RowError(
                    f"call to '{call.name}', which the row does not declare (tools: {offered})",
                    f"{spot}.name",
                    kind="undeclared_function",
                )
            reason = check_instance(call.arguments_value(), spec.parameters)
            if reason is not None:
                raise RowError(
                    f"the arguments of '{call.name}' violate its parameters schema: {reason}",
                    f"{spot}.arguments",
                    kind="schema_violation",
                )
            pending[call.id] = call
        if message.role is Role.TOOL:
            if message.tool_call_id is None or message.tool_call_id not in pending:
                which = f" '{message.tool_call_id}'" if message.tool_call_id else ""
                raise RowError(
                    f"a tool message answers no call{which} (no unanswered call before it)",
                    f"{where}.tool_call_id",
                    kind="orphan_tool_result",
                )
            del pending[message.tool_call_id]


def _unanswered(pending: Mapping[str, ToolCall], where: str) -> None:
    names = ", ".join(f"{c.name} ({c.id})" for c in pending.values())
    raise RowError(
        f"call(s) without a result before the next user turn: {names} (set "
        "validation.require_tool_results: false to allow)",
        where,
        kind="missing_tool_result",
    )
