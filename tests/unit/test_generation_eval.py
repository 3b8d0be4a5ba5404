"""The generation task of `largeforge eval`: reading prompt files, matching answers, scores."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.application.generation_eval import (
    GenerationEvalTask,
    parse_generation_row,
    read_generation_file,
)
from largeforge.domain.datasets import Role
from largeforge.domain.errors import DatasetError
from largeforge.domain.eval_matching import MatchKind, match_text, normalize
from tests.eval_fakes import FakeEngineFactory, variant
from tests.fakes import InMemoryRowSource

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["name", "year"],
}


# ---------- matching ----------


@pytest.mark.parametrize(
    ("answer", "reference", "ignore_case", "matched"),
    [
        ("  3 \n", "3", False, True),
        ("Hello   big\n\tworld", "Hello big world", False, True),
        ("3.", "3", False, False),
        ("Tuple", "tuple", False, False),
        ("Tuple", "tuple", True, True),
        ("tuples", "tuple", True, False),
    ],
)
def test_exact_compares_stripped_text_with_whitespace_collapsed(
    answer: str, reference: str, ignore_case: bool, matched: bool
) -> None:
    verdict = match_text(answer, MatchKind.EXACT, reference, ignore_case=ignore_case)
    assert verdict.matched is matched
    assert verdict.valid_json is None


@pytest.mark.parametrize(
    ("answer", "reference", "ignore_case", "matched"),
    [
        ("Use the json module.", "json", False, True),
        ("Use the JSON module.", "json", False, False),
        ("Use the JSON module.", "json", True, True),
        ("call list.append(x)\non it", "append(x) on", False, True),  # blanks normalized
        ("Use pickle.", "json", False, False),
    ],
)
def test_contains_finds_the_reference_in_the_answer(
    answer: str, reference: str, ignore_case: bool, matched: bool
) -> None:
    assert match_text(answer, MatchKind.CONTAINS, reference, ignore_case=ignore_case).matched is (
        matched
    )


@pytest.mark.parametrize(
    ("answer", "pattern", "ignore_case", "matched"),
    [
        ("def square(x):\n    return x * x", r"def\s+square\s*\(", False, True),
        ("lambda x: x * x", r"def\s+square\s*\(", False, False),
        ("Python 3.12 is out", r"\b3\.\d+", False, True),
        ("  42  ", r"^\d+$", False, True),  # anchored against the stripped answer
        ("DEF square(", r"def square", True, True),
        ("DEF square(", r"def square", False, False),
    ],
)
def test_regex_searches_the_stripped_answer(
    answer: str, pattern: str, ignore_case: bool, matched: bool
) -> None:
    assert match_text(answer, MatchKind.REGEX, pattern, ignore_case=ignore_case).matched is matched


@pytest.mark.parametrize(
    ("answer", "matched", "valid_json"),
    [
        ('{"name": "Python", "year": 1991}', True, True),
        ('```json\n{"name": "Python", "year": 1991}\n```', True, True),
        ('{"name": "Python", "year": "1991"}', False, True),  # JSON, not of the schema
        ('{"name": "Python"}', False, True),
        ('{"name": "Python", "year": 1991', False, False),
        ('Here: {"name": "Python", "year": 1991}', False, False),
        ("", False, False),
    ],
)
def test_json_schema_needs_json_that_satisfies_the_schema(
    answer: str, matched: bool, valid_json: bool
) -> None:
    verdict = match_text(answer, MatchKind.JSON_SCHEMA, schema=SCHEMA)
    assert (verdict.matched, verdict.valid_json) == (matched, valid_json)


@given(st.text())
def test_normalize_is_idempotent_and_leaves_no_runs_of_blanks(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    assert "  " not in once
    assert once == once.strip()


@given(st.text(), st.text())
def test_exact_is_symmetric(a: str, b: str) -> None:
    assert match_text(a, MatchKind.EXACT, b).matched == match_text(b, MatchKind.EXACT, a).matched


# ---------- the task ----------


def rows() -> list[dict[str, Any]]:
    return [
        {"prompt": "len of [1, 2, 3]?", "reference": "3"},
        {"prompt": "which keyword defines functions?", "reference": "def", "match": "exact"},
        {"prompt": "json module?", "reference": "json", "match": "contains", "max_tokens": 40},
        {"prompt": "square function?", "reference": r"def\s+square", "match": "regex"},
        {"prompt": "python as json?", "match": "json_schema", "schema": SCHEMA},
        {"prompt": "broken json?", "match": "json_schema", "schema": SCHEMA},
    ]


ANSWERS = [
    ("len", "  3\n"),  # exact: right
    ("keyword", "lambda"),  # exact: wrong
    ("module?", "Use the json module."),  # contains: right
    ("square", "def square(x): return x * x"),  # regex: right
    ("python as", '{"name": "Python", "year": 1991}'),  # schema: right
    ("broken", '{"name": "Python", '),  # schema: not JSON
]


def task(factory: FakeEngineFactory, **kwargs: Any) -> GenerationEvalTask:
    source = InMemoryRowSource({"gen.jsonl": rows()})
    return GenerationEvalTask("gen", read_generation_file(source, "gen.jsonl"), factory, **kwargs)


def test_the_task_scores_each_rows_match_with_wilson_intervals() -> None:
    factory = FakeEngineFactory(ANSWERS)
    scores = {s.metric: s for s in task(factory).evaluate(variant("tuned"))}

    assert set(scores) == {"match", "valid_json"}
    assert scores["match"].value == pytest.approx(4 / 6)
    assert scores["match"].n == 6
    assert scores["valid_json"].value == pytest.approx(1 / 2)
    assert scores["valid_json"].n == 2  # the json_schema rows only
    for score in scores.values():
        assert score.task == "gen"
        assert score.low is not None
        assert score.high is not None
        assert 0.0 <= score.low <= score.value <= score.high <= 1.0


def test_the_task_asks_greedily_with_each_rows_budget_and_closes_the_engine() -> None:
    factory = FakeEngineFactory(ANSWERS)
    task(factory, max_tokens=32).evaluate(variant("tuned"))

    (engine,) = factory.engines
    assert [v.name for v in factory.opened] == ["tuned"]
    assert engine.closed
    budgets = sorted(params.max_tokens or 0 for _, params, _ in engine.requests)
    assert budgets == [32, 32, 32, 32, 32, 40]
    assert all(params.greedy and params.constraint is None for _, params, _ in engine.requests)


def test_without_json_schema_rows_there_is_no_valid_json_score() -> None:
    source = InMemoryRowSource({"g": [{"prompt": "len of [1, 2, 3]?", "reference": "3"}]})
    factory = FakeEngineFactory([("len", "3")])
    scores = GenerationEvalTask("g", read_generation_file(source, "g"), factory).evaluate(variant())
    assert [(s.metric, s.value, s.n) for s in scores] == [("match", 1.0, 1)]


def test_an_answer_cut_at_the_budget_is_scored_as_it_stands() -> None:
    source = InMemoryRowSource({"g": [{"prompt": "q?", "reference": "abcdef", "max_tokens": 1}]})
    factory = FakeEngineFactory([("q?", "abcdef")])  # two 3-character tokens
    scores = GenerationEvalTask("g", read_generation_file(source, "g"), factory).evaluate(variant())
    assert scores[0].value == 0.0


# ---------- reading ----------


def test_prompt_system_and_messages_become_the_conversation() -> None:
    case = parse_generation_row({"prompt": "hi?", "system": "be brief", "reference": "x"}, 1)
    assert [m.role for m in case.messages] == [Role.SYSTEM, Role.USER]
    chat = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    case = parse_generation_row({"messages": chat, "system": "ignored", "reference": "x"}, 2)
    assert [m.content for m in case.messages] == ["s", "a", "b", "c"]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"reference": "3"}, "prompt", "exactly one of 'prompt'"),
        ({"prompt": "q", "messages": [], "reference": "3"}, "prompt", "exactly one of"),
        ({"prompt": "q"}, "reference", "needs a non-empty string 'reference'"),
        ({"prompt": "q", "reference": 3}, "reference", "got int"),
        ({"prompt": "q", "reference": "3", "match": "fuzzy"}, "match", "unknown match 'fuzzy'"),
        ({"prompt": "q", "reference": "(", "match": "regex"}, "reference", "not a valid regex"),
        ({"prompt": "q", "match": "json_schema"}, "schema", "needs a 'schema'"),
        ({"prompt": "q", "match": "json_schema", "schema": []}, "schema", "got list"),
        (
            {"prompt": "q", "match": "json_schema", "schema": {"patternProperties": {}}},
            "schema",
            "cannot enforce: patternProperties",
        ),
        ({"prompt": "q", "reference": "3", "max_tokens": 0}, "max_tokens", "positive integer"),
        ({"prompt": "q", "reference": "3", "max_tokens": True}, "max_tokens", "positive integer"),
        ({"prompt": "q", "reference": "3", "ignore_case": "yes"}, "ignore_case", "true or false"),
        ({"prompt": "  ", "reference": "3"}, "prompt", "is empty"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "reference": "3",
            },
            "messages",
            "must end with a user turn",
        ),
        (
            {"messages": [{"role": "robot", "content": "q"}], "reference": "3"},
            "messages[0].role",
            "unknown role",
        ),
    ],
)
def test_a_bad_row_is_an_error_naming_file_line_field_and_reason(
    row: dict[str, Any], field: str, reason: str
) -> None:
    source = InMemoryRowSource({"gen.jsonl": [{"prompt": "fine", "reference": "x"}, row]})
    with pytest.raises(DatasetError) as caught:
        read_generation_file(source, "gen.jsonl")
    message = str(caught.value)
    assert message.startswith("gen.jsonl: line 2 field ")
    assert f"field '{field}'" in message
    assert reason in message


def test_every_bad_row_is_counted_and_json_errors_name_their_line() -> None:
    bad = [{"prompt": "q"}, "Expecting value", [1, 2], {"prompt": "q"}, {"prompt": "q"}]
    source = InMemoryRowSource({"gen.jsonl": [{"prompt": "ok", "reference": "x"}, *bad]})
    with pytest.raises(DatasetError) as caught:
        read_generation_file(source, "gen.jsonl")
    message = str(caught.value)
    assert "line 2 field 'reference'" in message
    assert "line 3: invalid JSON: Expecting value" in message
    assert "line 4: a row must be a JSON object" in message
    assert "(and 2 more bad rows)" in message


def test_an_empty_file_is_an_error() -> None:
    with pytest.raises(DatasetError, match=r"gen\.jsonl: no rows to evaluate"):
        read_generation_file(InMemoryRowSource({"gen.jsonl": []}), "gen.jsonl")
