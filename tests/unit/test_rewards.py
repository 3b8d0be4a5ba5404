"""GRPO's verifiable rewards: the run file's reward specs, answer extraction, each reward."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain.errors import ConfigError
from largeforge.domain.rewards import (
    RewardKind,
    extract_answer,
    last_number,
    reward_spec,
    reward_specs,
    score,
    weighted_rewards,
)

WORDS = st.text(alphabet="abcdefghij ,.:!?", max_size=20)


@given(prefix=WORDS, value=st.integers(-(10**12), 10**12), suffix=st.sampled_from(["", ".", " !"]))
def test_the_last_integer_is_read_back(prefix: str, value: int, suffix: str) -> None:
    assert last_number(f"{prefix} 7 then {value}{suffix}") == value


@given(value=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_the_last_float_is_read_back(value: float) -> None:
    assert last_number(f"so the answer is {value!r}") == value


@given(value=st.integers(1000, 10**9))
def test_thousands_separators_are_one_number(value: int) -> None:
    assert last_number(f"{value:,} apples") == value


def test_text_without_a_number_has_none() -> None:
    assert last_number("no digits here") is None
    assert last_number("") is None


@given(answer=WORDS, before=WORDS, after=WORDS)
def test_the_answer_is_the_last_tagged_one(answer: str, before: str, after: str) -> None:
    text = f"{before}<answer>wrong</answer>{before}<answer>{answer}</answer>{after}"
    assert extract_answer(text, r"<answer>(.*?)</answer>") == answer.strip()
    assert extract_answer(before, r"<answer>(.*?)</answer>") is None
    assert extract_answer(f"  {answer}\n", None) == answer.strip()


def spec(**raw: Any) -> Any:
    return reward_spec(raw)


@given(a=st.integers(-999, 999), b=st.integers(-999, 999))
def test_numeric_answers_score_one_only_when_equal(a: int, b: int) -> None:
    numeric = spec(kind="numeric_answer", answer_pattern=r"<answer>(.*?)</answer>")
    completion = f"I think 5 + {a} ... <answer>{a}</answer>"
    assert score(numeric, completion, str(b)) == float(a == b)
    assert score(numeric, f"{a}", str(a)) == 0.0  # no tagged answer
    assert score(numeric, completion, None) == 0.0  # no reference


def test_numeric_tolerance_is_relative() -> None:
    loose = spec(kind="numeric_answer", tolerance=0.01)
    assert score(loose, "100.5", "100") == 1.0
    assert score(loose, "102", "100") == 0.0
    assert score(spec(kind="numeric_answer"), "0.1", "0.10") == 1.0


def test_exact_answers_compare_normalized_text() -> None:
    exact = spec(kind="exact_answer")
    assert score(exact, "  Paris \n", "Paris") == 1.0
    assert score(exact, "paris", "Paris") == 0.0
    assert score(spec(kind="exact_answer", ignore_case=True), "paris", "Paris") == 1.0


def test_format_rewards_search_the_whole_completion() -> None:
    tagged = spec(kind="format", pattern=r"^<think>.*</think>\s*<answer>.*</answer>$")
    assert score(tagged, "<think>a\nb</think>\n<answer>4</answer>\n", None) == 1.0
    assert score(tagged, "<answer>4</answer>", None) == 0.0


def test_json_schema_rewards_need_valid_matching_json() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    valid = spec(kind="json_schema", schema=schema)
    assert score(valid, '```json\n{"n": 3}\n```', None) == 1.0
    assert score(valid, '{"n": "3"}', None) == 0.0
    assert score(valid, "{n: 3}", None) == 0.0


@given(length=st.integers(0, 400))
def test_the_length_penalty_falls_linearly_past_the_limit(length: int) -> None:
    penalty = score(spec(kind="length_penalty", max_chars=100), "x" * length, None)
    assert penalty == -min(1.0, max(0, length - 100) / 100)
    assert -1.0 <= penalty <= 0.0


def test_weighted_rewards_sum_each_reward_times_its_weight() -> None:
    specs = reward_specs(
        [
            {"kind": "format", "pattern": "<answer>", "weight": 0.5},
            {"kind": "numeric_answer", "answer_pattern": "<answer>(.*)</answer>", "weight": 2},
            {"kind": "length_penalty", "max_chars": 10, "name": "short"},
        ]
    )
    total, each = weighted_rewards(specs, "<answer>12</answer>", "12")
    assert each == {"format": 1.0, "numeric_answer": 1.0, "short": -0.9}
    assert math.isclose(total, 0.5 + 2.0 - 0.9)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], r"^rewards: must be a non-empty list"),
        ("format", r"^rewards: must be a non-empty list"),
        ([{"kind": "vibes"}], r"^rewards\[0\]\.kind: unknown reward 'vibes'"),
        ([7], r"^rewards\[0\]: must be a mapping"),
        ([{"kind": "format"}], r"^rewards\[0\]\.pattern: the format reward needs it"),
        ([{"kind": "format", "pattern": "("}], r"^rewards\[0\]\.pattern: not a regular"),
        ([{"kind": "format", "pattern": "a", "max_chars": 3}], r"^rewards\[0\]\.max_chars: not"),
        (
            [{"kind": "exact_answer", "answer_pattern": "<a>.*</a>"}],
            r"^rewards\[0\]\.answer_pattern: needs a group",
        ),
        ([{"kind": "numeric_answer", "weight": "high"}], r"^rewards\[0\]\.weight: must be a"),
        ([{"kind": "numeric_answer", "tolerance": -1}], r"^rewards\[0\]\.tolerance: must not"),
        ([{"kind": "json_schema", "schema": 3}], r"^rewards\[0\]\.schema: must be a JSON"),
        (
            [{"kind": "json_schema", "schema": {"type": "object", "if": {}}}],
            r"^rewards\[0\]\.schema: unsupported keyword",
        ),
        ([{"kind": "length_penalty", "max_chars": 0}], r"^rewards\[0\]\.max_chars: must be a pos"),
        ([{"kind": "exact_answer", "ignore_case": "yes"}], r"^rewards\[0\]\.ignore_case: must"),
        (
            [{"kind": "exact_answer"}, {"kind": "exact_answer"}],
            r"^rewards\[1\]\.name: another reward is already called 'exact_answer'",
        ),
        ([{"kind": "python"}], r"^rewards\[0\]\.function: the python reward needs it"),
        (
            [{"kind": "python", "function": "my_rewards.reward"}],
            r"^rewards\[0\]\.function: must be an import path 'package.module:function'",
        ),
        (
            [{"kind": "python", "function": "a:b:c"}],
            r"^rewards\[0\]\.function: must be an import path",
        ),
        (
            [{"kind": "format", "pattern": "x", "function": "a:b"}],
            r"^rewards\[0\]\.function: not an",
        ),
    ],
)
def test_bad_reward_options_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reward_specs(raw)


def test_every_kind_reads_with_its_required_options() -> None:
    required = {"format": {"pattern": "x"}, "json_schema": {"schema": {}}}
    required["length_penalty"] = {"max_chars": 5}
    required["python"] = {"function": "my_rewards:reward"}
    for kind in RewardKind:
        assert reward_spec({"kind": kind.value, **required.get(kind.value, {})}).kind is kind


def test_a_python_reward_is_labelled_by_its_function_and_not_scored_here() -> None:
    spec = reward_spec({"kind": "python", "function": "pkg.rewards:brevity"})
    assert spec.label == "brevity"
    assert reward_spec({"kind": "python", "function": "m:f", "name": "mine"}).label == "mine"
    with pytest.raises(ValueError, match="computed by its adapter"):
        score(spec, "text", None)


CALL = '[{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]'


@pytest.mark.parametrize(
    ("reference", "made", "expected"),
    [
        (CALL, [("get_weather", '{"days": 2, "city": "Paris"}')], 1.0),  # key order is free
        (CALL, [("get_weather", '{"city": "Rome", "days": 2}')], 0.5),  # right function
        (CALL, [("get_time", '{"city": "Paris"}')], 0.0),
        (CALL, [], 0.0),
        (CALL, [("get_weather", '{"city": "Paris", "days": 2}')] * 2, 0.0),  # one call too many
        ("[]", [], 1.0),  # no call was right, and none was made
        ("[]", [("get_weather", "{}")], 0.0),
        (
            '{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}',
            [("get_time", '{"tz":"UTC"}')],
            1.0,
        ),
        ("not json", [], 0.0),
        ('[{"arguments": {}}]', [], 0.0),
        (None, [], 0.0),
    ],
)
def test_tool_call_reward_scores_made_calls_against_the_reference(
    reference: str | None, made: list[tuple[str, str]], expected: float
) -> None:
    from largeforge.domain.eval_matching import MadeCall
    from largeforge.domain.rewards import tool_call_score

    assert tool_call_score(reference, [MadeCall(n, a) for n, a in made]) == expected


def test_tool_call_reward_reads_with_no_options() -> None:
    assert reward_spec({"kind": "tool_call"}).label == "tool_call"
    with pytest.raises(ConfigError, match=r"rewards\[0\]\.pattern: not an option of the tool_call"):
        reward_spec({"kind": "tool_call", "pattern": "x"})
