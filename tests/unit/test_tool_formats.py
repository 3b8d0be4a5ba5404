"""Tool-use datasets: both conventions read, checked row by row, and converted both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.application.data import PrepareDataset
from largeforge.domain.datasets import Conversation, Message, Role, SftExample
from largeforge.domain.formats import (
    DatasetFormat,
    DatasetSpec,
    RowError,
    detect_format,
    parse_row,
    to_row,
)
from largeforge.domain.tools import ToolCall, ToolSpec
from largeforge.domain.validation import ValidationPolicy, check_record
from tests.fakes import InMemoryRowSource

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tools_sharegpt.jsonl"
SAMPLE = Path(__file__).parents[2] / "src/largeforge/resources/data/sample_tools.jsonl"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def call(arguments: Any = '{"city": "Paris"}', name: str = "get_weather", id: str = "c1") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def row(*messages: dict[str, Any], tools: Any = (WEATHER,)) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": list(messages)}
    if tools is not None:
        out["tools"] = list(tools)
    return out


USER = {"role": "user", "content": "Weather in Paris?"}
CALLS = {"role": "assistant", "content": None, "tool_calls": [call()]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 18}'}
ANSWER = {"role": "assistant", "content": "18 C."}
GOOD = row(USER, CALLS, RESULT, ANSWER)


def prepare(rows: list[Any], policy: ValidationPolicy | None = None) -> Any:
    return PrepareDataset(InMemoryRowSource({"tools.jsonl": rows})).execute(
        DatasetSpec("tools.jsonl"), policy
    )


def test_an_openai_tool_conversation_parses_with_its_tools_calls_and_results() -> None:
    record = parse_row(GOOD, DatasetFormat.MESSAGES)
    assert isinstance(record, SftExample)
    check_record(record)
    assert [t.name for t in record.tools] == ["get_weather"]
    assistant = record.conversation.messages[1]
    assert assistant.content == ""
    assert assistant.tool_calls == (ToolCall("c1", "get_weather", '{"city": "Paris"}'),)
    assert record.conversation.messages[2].tool_call_id == "c1"


def test_arguments_given_as_an_object_and_results_without_ids_are_matched_in_order() -> None:
    calls = [call({"city": "Rome"}, id="a"), call({"city": "Oslo"}, id="b")]
    record = parse_row(
        row(
            USER,
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "content": "rome: 20"},
            {"role": "tool", "content": "oslo: 5"},
            ANSWER,
        ),
        DatasetFormat.MESSAGES,
    )
    check_record(record)
    assert isinstance(record, SftExample)
    assert [m.tool_call_id for m in record.conversation.messages[2:4]] == ["a", "b"]


def test_detection_names_the_convention_it_saw() -> None:
    openai = detect_format([GOOD, GOOD]).describe()
    assert openai == (
        "messages (2 of 2 sampled rows; tool calls: OpenAI tools / tool_calls / tool messages "
        "in 2 rows)"
    )
    sharegpt = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    described = detect_format(sharegpt).describe()
    assert described.startswith("sharegpt (12 of 12 sampled rows; tool calls: ShareGPT")
    assert "function_call / observation turns in 12 rows" in described
    assert "tool calls" not in detect_format([{"messages": [USER, ANSWER]}]).describe()


def test_every_llamafactory_row_of_the_fixture_parses_and_passes() -> None:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    prepared = prepare(rows)
    assert prepared.report.issues == ()
    assert prepared.report.kept == 12
    records = [r for r in prepared.records if isinstance(r, SftExample)]
    assert all(r.tools for r in records)
    calls = [c for r in records for m in r.conversation.messages for c in m.tool_calls]
    results = [m for r in records for m in r.conversation.messages if m.role is Role.TOOL]
    assert len(calls) >= 10
    assert {m.tool_call_id for m in results} <= {c.id for c in calls}


def test_the_bundled_tool_sample_is_clean() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    prepared = prepare(rows)
    assert prepared.report.issues == ()
    assert prepared.report.kept == len(rows) >= 300
    assert "OpenAI tools" in prepared.report.detection


PLANTED = [
    (row(USER, {**CALLS, "tool_calls": [call('{"city": "Paris"')]}), "invalid_arguments",
     "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    (row(USER, {**CALLS, "tool_calls": [call(name="get_time")]}), "undeclared_function",
     "messages[1].tool_calls[0].function.name", "'get_time', which the row does not declare"),
    (row(USER, {**CALLS, "tool_calls": [call('{"city": 3}')]}), "schema_violation",
     "messages[1].tool_calls[0].function.arguments", "violate its parameters schema"),
    (row(USER, {**CALLS, "tool_calls": [call('{"town": "Paris"}')]}), "schema_violation",
     "messages[1].tool_calls[0].function.arguments", "city"),
    (row(USER, CALLS, {**RESULT, "tool_call_id": "zz"}, ANSWER), "orphan_tool_result",
     "messages[2].tool_call_id", "answers no call 'zz'"),
    (row(USER, ANSWER, {"role": "tool", "content": "x"}, ANSWER), "bad_turn_order",
     "messages", "turn 3 is tool but follows assistant"),
    (row(USER, CALLS, USER, ANSWER), "missing_tool_result",
     "messages[2]", "get_weather (c1)"),
    (row(USER, CALLS, RESULT, ANSWER, tools=None), "undeclared_function",
     "messages[1].tool_calls[0].function.name", "(tools: none)"),
    (row(USER, CALLS, RESULT, ANSWER, tools=[{"type": "function", "function": {"name": "a b"}}]),
     "invalid_tools", "tools[0].function.name", "function name"),
    (row(USER, {"role": "assistant", "content": None, "tool_calls": []}), "wrong_type",
     "messages[1].content", "got null"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "kind", "field", "reason"), PLANTED)
def test_a_planted_bad_tool_row_is_named_with_line_field_and_reason(
    bad: dict[str, Any], kind: str, field: str, reason: str
) -> None:
    prepared = prepare([GOOD, bad, row(USER, ANSWER)])
    (issue,) = prepared.report.issues
    assert (issue.line, issue.kind, issue.field) == (2, kind, field)
    assert reason in issue.reason
    assert prepared.report.kept == 2


def test_calls_left_unanswered_before_the_next_user_turn_can_be_allowed() -> None:
    unanswered = row(USER, CALLS, USER, ANSWER)
    assert prepare([unanswered]).report.kept == 0
    allowed = prepare([unanswered], ValidationPolicy(require_tool_results=False))
    assert allowed.report.issues == ()


def test_a_row_holding_only_tools_declares_them_for_the_rows_after_it() -> None:
    bare = {"messages": GOOD["messages"]}
    prepared = prepare([bare, {"tools": [WEATHER]}, bare, {**bare, "messages": [USER, ANSWER]}])
    assert [i.kind for i in prepared.report.issues] == ["undeclared_function"]
    assert prepared.report.rows == 3  # the declaration is not a row to train on
    assert [len(r.tools) for r in prepared.records] == [1, 1]


def test_columns_map_other_names_to_tools_and_messages() -> None:
    source = {"functions": json.dumps([WEATHER["function"]]), "chat": GOOD["messages"]}
    prepared = PrepareDataset(InMemoryRowSource({"f": [source]})).execute(
        DatasetSpec("f", columns=(("tools", "functions"), ("messages", "chat")))
    )
    assert prepared.report.issues == ()
    (record,) = prepared.records
    assert isinstance(record, SftExample)
    assert record.tools[0].name == "get_weather"


# ---------- conversions, property-based ----------

names = st.sampled_from(["get_weather", "get_time", "search"])
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
arguments = st.dictionaries(st.sampled_from(["a", "b", "city"]), st.integers() | texts, max_size=3)


@st.composite
def tool_conversations(draw: st.DrawFn) -> SftExample:
    tools = tuple(
        ToolSpec(n, "d", {"type": "object"}) for n in ("get_weather", "get_time", "search")
    )
    messages = [Message(Role.USER, draw(texts).strip() or "q")]
    for turn in range(draw(st.integers(1, 3))):
        n_calls = draw(st.integers(0, 2))
        calls = tuple(
            ToolCall(
                f"call_{turn}_{j}", draw(names), json.dumps(draw(arguments), ensure_ascii=False)
            )
            for j in range(n_calls)
        )
        if not calls:
            messages.append(Message(Role.ASSISTANT, draw(texts).strip() or "a"))
            messages.append(Message(Role.USER, draw(texts).strip() or "q"))
            continue
        messages.append(Message(Role.ASSISTANT, "", calls))
        messages += [Message(Role.TOOL, draw(texts), (), c.id, c.name) for c in calls]
    messages.append(Message(Role.ASSISTANT, draw(texts).strip() or "done"))
    return SftExample(Conversation(tuple(messages)), tools=tools)


@settings(max_examples=150, deadline=None)
@given(tool_conversations())
def test_tool_conversations_convert_both_ways_unchanged(record: SftExample) -> None:
    check_record(record)
    again = parse_row(to_row(record, DatasetFormat.MESSAGES), DatasetFormat.MESSAGES)
    assert again == record
    shared = parse_row(to_row(record, DatasetFormat.SHAREGPT), DatasetFormat.SHAREGPT)
    assert isinstance(shared, SftExample)
    check_record(shared)
    strip = [(m.role, m.content, [(c.name, c.arguments_value()) for c in m.tool_calls])
             for m in record.conversation.messages]  # fmt: skip
    assert strip == [
        (m.role, m.content, [(c.name, c.arguments_value()) for c in m.tool_calls])
        for m in shared.conversation.messages
    ]
    assert shared.tools == record.tools


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "bot"])},
    optional={
        "content": json_values,
        "tool_calls": st.lists(
            st.fixed_dictionaries({}, optional={"id": json_values, "function": json_values}),
            max_size=2,
        )
        | json_values,
        "tool_call_id": json_values,
        "name": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(message_like, max_size=5), json_values)
def test_any_json_row_is_a_record_or_a_row_error_never_a_crash(messages: Any, tools: Any) -> None:
    errors: list[RowError] = []
    for candidate in ({"messages": messages, "tools": tools}, {"conversations": messages}):
        try:
            check_record(parse_row(candidate, DatasetFormat.MESSAGES))
        except RowError as error:
            errors.append(error)
    assert all(error.reason and error.kind for error in errors)


def test_a_bad_tools_declaration_row_is_a_bad_row() -> None:
    prepared = prepare([{"tools": [{"type": "function", "function": {"name": "a b"}}]}, GOOD])
    ((line, kind),) = [(i.line, i.kind) for i in prepared.report.issues]
    assert (line, kind) == (1, "invalid_tools")
    assert prepared.report.rows == 2  # counted as a row, unlike a good declaration
