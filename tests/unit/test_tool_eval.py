"""The tool-call task of `largeforge eval`: rows in the OpenAI shape, calls made through
`TextGeneration` (the hermes format over a scripted engine), and every metric."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.adapters.data.sources import FileRowSource
from largeforge.adapters.tools import tool_call_format
from largeforge.application.tool_eval import (
    BUNDLED_FILE,
    BUNDLED_PACKAGE,
    ToolCallEvalTask,
    read_tool_file,
    score_tool_rows,
)
from largeforge.application.tool_rows import ToolRowParser, parse_tools
from largeforge.domain.datasets import Role
from largeforge.domain.errors import DatasetError
from largeforge.domain.eval_matching import (
    ExpectedCall,
    MadeCall,
    all_calls_match,
    score_calls,
)
from largeforge.domain.schema_check import json_equal
from largeforge.domain.tools import ConstraintKind, ToolChoiceMode
from tests.eval_fakes import FakeEngineFactory, variant
from tests.fakes import InMemoryRowSource

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
TOOLS = [WEATHER, TIME]


def call(name: str, arguments: dict[str, Any] | str) -> str:
    """A hermes call as a model writes it (arguments as written, when given as text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {text}}}\n</tool_call>'


PARIS = {"city": "Paris", "unit": "celsius"}


def row(prompt: str, expected: Any, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "expected": expected, **extra}


def expect(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


# prompt (a unique word) -> the answer the scripted model gives, and the row it answers
SCENARIOS: list[tuple[str, str, Any]] = [
    ("right", call("get_weather", {"unit": "celsius", "city": "Paris"}), PARIS),  # keys reordered
    ("wrongfn", call("get_time", {"timezone": "Europe/Paris"}), PARIS),
    ("wrongargs", call("get_weather", {"city": "Lyon", "unit": "celsius"}), PARIS),
    ("extra", call("get_weather", PARIS) + call("get_time", {"timezone": "UTC"}), PARIS),
    ("missing", "It is sunny in Paris.", PARIS),
    ("badjson", call("get_weather", '{"city": Paris}'), PARIS),
    ("quiet", "Hello! How can I help?", None),
    ("eager", call("get_time", {"timezone": "UTC"}), None),
]


def scenario_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"tools": TOOLS}]
    for word, _, expected in SCENARIOS:
        wanted = None if expected is None else expect("get_weather", expected)
        rows.append(row(f"{word} question", wanted))
    return rows


def make_task(
    factory: FakeEngineFactory, rows: list[dict[str, Any]], **kwargs: Any
) -> ToolCallEvalTask:
    cases = read_tool_file(InMemoryRowSource({"tools.jsonl": rows}), "tools.jsonl")
    return ToolCallEvalTask("tools", cases, factory, tool_call_format, **kwargs)


def scores_of(task: ToolCallEvalTask) -> dict[str, tuple[float, int]]:
    return {s.metric: (s.value, s.n) for s in task.evaluate(variant("tuned"))}


def test_every_metric_over_right_wrong_extra_missing_and_unneeded_calls() -> None:
    factory = FakeEngineFactory([(f"{w} question", answer) for w, answer, _ in SCENARIOS])
    scores = scores_of(make_task(factory, scenario_rows()))

    # right + quiet are the only correct rows of 8
    assert scores["accuracy"] == (2 / 8, 8)
    # 6 rows expect a call; the right function (called once) in right, wrongargs, badjson
    assert scores["function"] == (3 / 6, 6)
    # of those three, only `right` has equal arguments
    assert scores["arguments"] == (1 / 3, 3)
    # 2 rows expect no call; quiet made none, eager called
    assert scores["no_call"] == (1 / 2, 2)
    # calls made: right 1, wrongfn 1, wrongargs 1, extra 2, badjson 1, eager 1 = 7; one bad JSON
    assert scores["valid_json"] == (6 / 7, 7)
    assert scores["valid_call"] == (6 / 7, 7)
    assert factory.engines[0].closed


def test_valid_call_needs_arguments_that_fit_the_functions_schema() -> None:
    rows = [
        row("kelvin question", expect("get_weather", PARIS), tools=TOOLS),
        row("extra key question", expect("get_weather", PARIS), tools=TOOLS),
    ]
    factory = FakeEngineFactory(
        [
            ("kelvin", call("get_weather", {"city": "Paris", "unit": "kelvin"})),
            ("extra key", call("get_weather", {"city": "Paris", "unit": "celsius", "x": 1})),
        ]
    )
    scores = scores_of(make_task(factory, rows))
    assert scores["valid_json"] == (1.0, 2)
    assert scores["valid_call"] == (0.0, 2)


def test_parallel_calls_match_in_any_order() -> None:
    expected = [expect("get_time", {"timezone": "UTC"}), expect("get_weather", PARIS)]
    factory = FakeEngineFactory(
        [("both", call("get_weather", PARIS) + call("get_time", {"timezone": "UTC"}))]
    )
    scores = scores_of(make_task(factory, [row("both question", expected, tools=TOOLS)]))
    assert scores["accuracy"] == (1.0, 1)
    assert scores["arguments"] == (1.0, 1)
    assert "no_call" not in scores  # nothing to count: left out, never a made-up value


def test_the_grammar_constrains_calls_unless_switched_off() -> None:
    rows = [row("right question", expect("get_weather", PARIS), tools=TOOLS)]
    answers = [("right", call("get_weather", PARIS))]
    with_grammar = FakeEngineFactory(answers)
    scores = scores_of(make_task(with_grammar, rows))
    (request,) = with_grammar.engines[0].requests
    constraint = request[1].constraint
    assert constraint is not None
    assert constraint.kind is ConstraintKind.STRUCTURAL_TAG
    assert with_grammar.engines[0].checked == [constraint]

    free = FakeEngineFactory(answers)
    free_scores = scores_of(make_task(free, rows, grammar=False))
    (request,) = free.engines[0].requests
    assert request[1].constraint is None
    assert free.engines[0].checked == []
    assert free_scores == scores  # the calls are still parsed out of the free text


def test_requests_are_greedy_with_the_rows_tools_choice_and_budget() -> None:
    rows = [
        {"tools": [WEATHER]},
        row("one question", expect("get_weather", PARIS), tool_choice="required", max_tokens=9),
        row("two question", None, tools=TOOLS, tool_choice="none"),
    ]
    factory = FakeEngineFactory(default="ok")
    task = make_task(factory, rows, max_tokens=50)
    requests = task.requests("tuned")
    assert [r.tool_choice.mode for r in requests] == [ToolChoiceMode.REQUIRED, ToolChoiceMode.NONE]
    assert [len(r.tools) for r in requests] == [1, 2]
    assert [r.params.max_tokens for r in requests] == [9, 50]
    assert all(r.params.greedy and r.model == "tuned" for r in requests)
    task.evaluate(variant("tuned"))
    assert factory.engines[0].rendered_tools == [("get_weather",), ()]  # `none` offers nothing


def test_each_variant_gets_its_own_engine_closed_after_use() -> None:
    factory = FakeEngineFactory(default="no call")
    task = make_task(factory, [row("a question", None, tools=TOOLS)])
    task.evaluate(variant("base"))
    task.evaluate(variant("tuned"))
    assert [v.name for v in factory.opened] == ["base", "tuned"]
    assert all(engine.closed for engine in factory.engines)


# ---------- scoring, directly ----------


def made(name: str, arguments: Any) -> MadeCall:
    return MadeCall(name, arguments if isinstance(arguments, str) else json.dumps(arguments))


@pytest.mark.parametrize(
    ("expected", "calls", "correct", "function", "arguments"),
    [
        ([ExpectedCall("f", {"a": 1})], [made("f", {"a": 1.0})], True, True, True),
        ([ExpectedCall("f", {"a": 1})], [made("f", {"a": True})], False, True, False),
        ([ExpectedCall("f", {"a": 1})], [made("f", {"a": "1"})], False, True, False),
        ([ExpectedCall("f", {"a": 1})], [made("f", {"a": 1, "b": None})], False, True, False),
        ([ExpectedCall("f", {"a": 1})], [made("g", {"a": 1})], False, False, False),
        ([ExpectedCall("f", {"a": 1})], [made("f", "{'a': 1}")], False, True, False),
        ([ExpectedCall("f", {"a": 1})], [], False, False, False),
        (
            [ExpectedCall("f", {"a": 1})],
            [made("f", {"a": 1}), made("f", {"a": 1})],
            False,
            False,
            False,
        ),
        (
            [ExpectedCall("f", {"a": 1}), ExpectedCall("f", {"a": 2})],
            [made("f", {"a": 2}), made("f", {"a": 1})],
            True,
            True,
            True,
        ),
        (None, [], True, False, False),
        (None, [made("f", {})], False, False, False),
    ],
)
def test_score_calls(
    expected: list[ExpectedCall] | None,
    calls: list[MadeCall],
    correct: bool,
    function: bool,
    arguments: bool,
) -> None:
    outcome = score_calls(expected, calls)
    assert (outcome.correct, outcome.function, outcome.arguments) == (correct, function, arguments)


def test_scores_leave_out_metrics_with_nothing_to_count() -> None:
    parser = ToolRowParser(parse_tools(TOOLS))
    case = parser(row("q", None), 1)
    assert case is not None
    scores = score_tool_rows("tools", [case], [[]])
    assert [(s.metric, s.value, s.n) for s in scores] == [("accuracy", 1.0, 1), ("no_call", 1.0, 1)]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=4), JSON, max_size=5), st.randoms())
def test_argument_equality_ignores_key_order(arguments: dict[str, Any], rng: Any) -> None:
    keys = list(arguments)
    rng.shuffle(keys)
    shuffled = {k: arguments[k] for k in keys}
    assert json_equal(arguments, shuffled)
    assert all_calls_match([ExpectedCall("f", arguments)], [made("f", shuffled)])


@given(JSON, JSON)
def test_json_equality_is_symmetric_and_reflexive(a: Any, b: Any) -> None:
    assert json_equal(a, b) == json_equal(b, a)
    if not _has_nan(a):
        assert json_equal(a, a)
        assert json_equal(a, json.loads(json.dumps(a)))


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


CALLS = st.lists(
    st.tuples(st.sampled_from("fg"), st.dictionaries(st.sampled_from("ab"), st.integers(0, 2))),
    max_size=4,
)


@given(CALLS, CALLS, st.randoms())
def test_call_matching_is_symmetric_and_order_free(
    left: list[tuple[str, dict[str, int]]], right: list[tuple[str, dict[str, int]]], rng: Any
) -> None:
    as_expected = [ExpectedCall(n, a) for n, a in left]
    as_made = [made(n, a) for n, a in right]
    swapped = all_calls_match([ExpectedCall(n, a) for n, a in right], [made(n, a) for n, a in left])
    assert all_calls_match(as_expected, as_made) == swapped
    shuffled = list(as_made)
    rng.shuffle(shuffled)
    assert score_calls(as_expected, as_made) == score_calls(as_expected, shuffled)


# ---------- reading ----------


def test_a_tools_row_sets_the_tools_of_the_rows_after_it_and_a_row_may_override() -> None:
    rows = [
        {"tools": [WEATHER]},
        row("a", expect("get_weather", PARIS)),
        row("b", None, tools=TOOLS),
        {"tools": [TIME]},
        row("c", expect("get_time", {"timezone": "UTC"})),
    ]
    cases = read_tool_file(InMemoryRowSource({"t": rows}), "t")
    assert [[t.name for t in c.tools] for c in cases] == [
        ["get_weather"],
        ["get_weather", "get_time"],
        ["get_time"],
    ]
    assert [c.line for c in cases] == [2, 3, 5]


def test_openai_shaped_calls_and_tool_turns_are_read() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
    ]
    expected = {"type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    rows: list[dict[str, Any]] = [
        {"messages": messages, "tools": TOOLS, "expected": None},
        {"prompt": "p", "tools": TOOLS, "expected": [expected]},
    ]
    with pytest.raises(DatasetError, match="missing required property 'timezone'"):
        read_tool_file(InMemoryRowSource({"t": rows}), "t")
    rows[1]["expected"] = [
        {"type": "function", "function": {"name": "get_time", "arguments": '{"timezone": "UTC"}'}}
    ]
    first, second = read_tool_file(InMemoryRowSource({"t": rows}), "t")
    assert [m.role for m in first.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL]
    assert first.messages[1].tool_calls[0].arguments_value() == {"city": "Paris"}
    assert first.messages[2].tool_call_id == "call_1"
    assert first.expected == ()
    assert second.expected == (ExpectedCall("get_time", {"timezone": "UTC"}),)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        (row("q", None) | {"tools": []}, "tools", "non-empty list of tools"),
        ({"prompt": "q", "tools": TOOLS}, "expected", "missing field 'expected'"),
        (row("q", expect("get_news", {})), "expected.name", "'get_news' is not among the tools"),
        (
            row("q", expect("get_weather", {"town": "Paris"})),
            "expected.arguments",
            "missing required property 'city'",
        ),
        (
            row("q", {"name": "get_weather", "arguments": "{city"}),
            "expected.arguments",
            "not valid JSON",
        ),
        (row("q", [expect("get_weather", PARIS), 3]), "expected[1]", "a call must be"),
        (
            row("q", expect("get_weather", PARIS), tool_choice="none"),
            "expected",
            "forbids the call",
        ),
        (row("q", None, tool_choice="required"), "expected", "forces a call"),
        (row("q", None, tool_choice="sometimes"), "tool_choice", "tool_choice must be"),
        (
            row("q", None, tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
            "names 'nope'",
        ),
        (
            row("q", [expect("get_weather", PARIS)] * 2, parallel_tool_calls=False),
            "expected",
            "parallel_tool_calls is false",
        ),
        (row("q", None, tools=[WEATHER, WEATHER]), "tools", "distinct names: get_weather"),
        (
            row("q", None, tools=[{"type": "function", "function": {"name": "a b"}}]),
            "tools[0].function.name",
            "1-64 letters",
        ),
        (
            row(
                "q",
                None,
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "patternProperties": {}},
                        },
                    }
                ],
            ),
            "tools[0].function.parameters",
            "cannot enforce: patternProperties",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}], "expected": None},
            "messages[0].tool_call_id",
            "answers no call",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ],
                "expected": None,
            },
            "messages",
            "must end with a user or tool turn",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x", "tool_calls": [expect("f", {})]}],
                "expected": None,
            },
            "messages[0].tool_calls",
            "only assistant turns",
        ),
        ({"expected": None}, "messages", "exactly one of 'messages' or 'prompt'"),
    ],
)
def test_a_bad_tool_row_is_an_error_naming_line_field_and_reason(
    bad: dict[str, Any], field: str, reason: str
) -> None:
    rows = [{"tools": TOOLS}, row("fine", None), bad]
    with pytest.raises(DatasetError) as caught:
        read_tool_file(InMemoryRowSource({"tools.jsonl": rows}), "tools.jsonl")
    message = str(caught.value)
    assert message.startswith(f"tools.jsonl: line 3 field '{field}': ")
    assert reason in message


def test_rows_without_any_tools_are_refused() -> None:
    with pytest.raises(DatasetError, match="line 1 field 'tools': no tools"):
        read_tool_file(InMemoryRowSource({"t": [row("q", None)]}), "t")


def test_the_bundled_set_reads_whole() -> None:
    path = str(resources.files(BUNDLED_PACKAGE) / BUNDLED_FILE)
    cases = read_tool_file(FileRowSource(), path)
    assert 40 <= len(cases) <= 60
    tools = {t.name for c in cases for t in c.tools}
    assert 4 <= len(tools) <= 6
    expecting_none = [c for c in cases if not c.expected]
    assert 5 <= len(expecting_none) <= len(cases) // 3
    assert any(len(c.expected) > 1 for c in cases)  # parallel calls
    assert any(c.messages[-1].role is Role.TOOL for c in cases)  # after a tool result
    assert {c.expected[0].name for c in cases if c.expected} == tools  # every tool is needed
