"""The cascade checks (pure functions of the request and the answer), the chunk assembler, the
session pins, and the config's refusals of bad cascades."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain.affinity import AffinityPolicy, SessionPins
from largeforge.domain.cascade import (
    Answer,
    CascadeCheck,
    CheckKind,
    answers_of,
    check_answer,
)
from largeforge.domain.chat_chunks import assemble_chunks
from largeforge.domain.errors import ConfigError
from largeforge.domain.routing import ExpertCost
from largeforge.routing_config import RouterSettings, load_router_settings

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}
JSON_REQUEST = {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": CITY}}]


def verdict(
    kind: CheckKind, request: dict[str, Any], answer: Answer, **kw: Any
) -> tuple[bool, str]:
    result = check_answer(CascadeCheck(kind, **kw), request, answer)
    return result.passed, result.reason


def test_json_schema_check_reads_the_requests_schema() -> None:
    good = Answer('{"city": "Oslo", "days": 3}')
    assert verdict(CheckKind.JSON_SCHEMA, JSON_REQUEST, good)[0]
    passed, why = verdict(
        CheckKind.JSON_SCHEMA, JSON_REQUEST, Answer('{"city": "Oslo", "days": 0}')
    )
    assert not passed
    assert "days" in why
    passed, why = verdict(
        CheckKind.JSON_SCHEMA, JSON_REQUEST, Answer('{"city": "Os', finish_reason="length")
    )
    assert not passed
    assert why == "json_schema: the answer is not JSON (cut at max_tokens)"
    object_request = {"response_format": {"type": "json_object"}}
    assert not verdict(CheckKind.JSON_SCHEMA, object_request, Answer("[1, 2]"))[0]
    # no schema asked for and none in the check: nothing to check
    assert verdict(CheckKind.JSON_SCHEMA, {}, Answer("plain words")) == (
        True, "json_schema: no schema requested"
    )  # fmt: skip
    # the check's own schema applies when the request has none
    assert not verdict(CheckKind.JSON_SCHEMA, {}, Answer("plain"), schema=SCHEMA)[0]
    assert verdict(CheckKind.JSON_SCHEMA, {}, good, schema=SCHEMA)[0]


def test_logprob_check_uses_the_mean_or_the_minimum() -> None:
    sure = Answer("x", logprobs=(-0.1, -0.2, -0.3))
    unsure = Answer("x", logprobs=(-0.1, -6.0, -0.2))
    assert verdict(CheckKind.LOGPROB, {}, sure, mean=-1.0)[0]
    passed, why = verdict(CheckKind.LOGPROB, {}, unsure, mean=-1.0)
    assert not passed
    assert why == "logprob: mean -2.100 < -1"
    assert verdict(CheckKind.LOGPROB, {}, unsure, mean=-3.0)[0]
    assert not verdict(CheckKind.LOGPROB, {}, unsure, mean=-3.0, min=-5.0)[0]
    assert not verdict(CheckKind.LOGPROB, {}, Answer("x"), mean=-9.0)[0]  # no logprobs: fail


def test_tool_call_check() -> None:
    request = {"tools": TOOLS}
    assert verdict(CheckKind.TOOL_CALL, request, Answer("", (("weather", '{"city": "Oslo"}'),)))[0]
    assert verdict(CheckKind.TOOL_CALL, request, Answer("no call needed"))[0]
    required = {"tools": TOOLS, "tool_choice": "required"}
    assert verdict(CheckKind.TOOL_CALL, required, Answer("text")) == (
        False, "tool_call: a call was required and none was made"
    )  # fmt: skip
    assert not verdict(CheckKind.TOOL_CALL, request, Answer("", (("stocks", "{}"),)))[0]
    assert not verdict(CheckKind.TOOL_CALL, request, Answer("", (("weather", '{"c'),)))[0]
    passed, why = verdict(CheckKind.TOOL_CALL, request, Answer("", (("weather", '{"city": 3}'),)))
    assert not passed
    assert "city" in why
    assert verdict(CheckKind.TOOL_CALL, {}, Answer("x")) == (True, "tool_call: no tools offered")


def test_regex_check() -> None:
    assert verdict(CheckKind.REGEX, {}, Answer("The answer is 42."), pattern=r"\d+")[0]
    assert not verdict(CheckKind.REGEX, {}, Answer("no digits"), pattern=r"\d+")[0]


def test_answers_of_reads_every_choice() -> None:
    payload = {"choices": [
        {"message": {"content": "a"}, "logprobs": {"content": [{"logprob": -1.5}]},
         "finish_reason": "stop"},
        {"message": {"content": None, "tool_calls": [
            {"function": {"name": "weather", "arguments": "{}"}}]}, "finish_reason": "tool_calls"},
    ]}  # fmt: skip
    first, second = answers_of(payload)
    assert first == Answer("a", (), (-1.5,), "stop")
    assert second == Answer("", (("weather", "{}"),), (), "tool_calls")


def test_expert_cost_is_per_thousand_tokens() -> None:
    assert ExpertCost(prompt=0.5, completion=2.0).of(1000, 500) == pytest.approx(1.5)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@given(
    content=st.text(min_size=1, max_size=40),
    arguments=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_chunks_assemble_to_the_completion_they_stream(
    content: str, arguments: dict[str, int], cuts: list[int]
) -> None:
    args = json.dumps(arguments)
    chunks: list[dict[str, Any]] = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    ]
    for piece in _split(content, cuts):
        chunks.append({"choices": [{"index": 0, "delta": {"content": piece},
                                    "logprobs": {"content": [{"logprob": -0.5}]}}]})  # fmt: skip
    first = {"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": ""}}
    chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
    for piece in _split(args, cuts):
        call = {"index": 0, "function": {"arguments": piece}}
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}})
    whole = assemble_chunks(chunks)
    (answer,) = answers_of(whole)
    assert answer.content == content
    assert answer.calls == (("weather", args),)
    assert answer.finish_reason == "tool_calls"
    assert len(answer.logprobs) == len(_split(content, cuts))
    assert whole["usage"] == {"prompt_tokens": 2, "completion_tokens": 5}
    assert whole["model"] == "m"


def test_session_pins_expire_move_and_stay_bounded() -> None:
    now = [0.0]
    pins = SessionPins(AffinityPolicy(ttl_s=10, max_sessions=2), clock=lambda: now[0])
    assert pins.pin("s1", "math", "math-1") is None
    assert pins.get("s1", "math") == "math-1"
    assert pins.get("s1", "code") is None  # per expert
    assert pins.pin("s1", "math", "math-1") is None  # same replica: no move
    assert pins.pin("s1", "math", "math-2") == "math-1"  # a move names where it came from
    now[0] = 20.0
    assert pins.get("s1", "math") is None  # expired
    assert pins.pin("s1", "math", "math-1") is None  # an expired pin is no move
    pins.pin("s2", "math", "math-1")
    pins.pin("s3", "math", "math-1")  # over the bound: the least recently used goes
    assert len(pins) == 2
    assert pins.get("s1", "math") is None
    assert pins.get("s3", "math") == "math-1"


def _settings(**cascade: Any) -> dict[str, Any]:
    return {
        "default_expert": "big",
        "classifier": "keyword",
        "experts": [{"name": "small", "replicas": [{"url": "http://127.0.0.1:1/v1"}]},
                    {"name": "big", "replicas": [{"url": "http://127.0.0.1:2/v1"}]}],
        "cascades": [{"name": "cheap", "steps": [{"expert": "small"}, {"expert": "big"}]}
                     | cascade],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        ({"steps": [{"expert": "tiny"}]}, "'tiny' is not an expert or the route 'auto'"),
        ({"name": "small"}, "the name is taken"),
        ({"steps": [{"expert": "small", "checks": [{"kind": "logprob"}]}]},
         "needs 'mean' or 'min'"),
        ({"steps": [{"expert": "small", "checks": [{"kind": "regex", "pattern": "("}]}]},
         "'pattern' is not a regular expression"),
        ({"steps": [{"expert": "small", "checks": [{"kind": "judge", "judge": "oracle"}]}]},
         "'oracle' is not an expert"),
        ({"steps": [{"expert": "small", "checks": [{"kind": "judge"}]}]}, "needs 'judge'"),
        ({"steps": [{"expert": "small", "checks": [
            {"kind": "json_schema", "schema": {"type": "object", "foo": 1}}]}]}, "at foo"),
        ({"steps": []}, "steps"),
    ],
)  # fmt: skip
def test_bad_cascades_are_refused_with_the_reason(
    tmp_path: Any, cascade: dict[str, Any], message: str
) -> None:
    import yaml

    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(_settings(**cascade)))
    with pytest.raises(ConfigError, match=r"router\.yaml") as caught:
        load_router_settings(path)
    assert message in str(caught.value)


def test_a_good_cascade_reads_back() -> None:
    settings = RouterSettings.model_validate(_settings(steps=[
        {"expert": "small", "checks": [{"kind": "json_schema"}, {"kind": "logprob", "mean": -1}]},
        {"expert": "auto"},
    ]))  # fmt: skip
    (cascade,) = settings.cascade_list()
    assert [s.target for s in cascade.steps] == ["small", "auto"]
    assert cascade.needs_logprobs


def test_the_cascade_example_reads() -> None:
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "router" / "cascade.yaml"
    settings = load_router_settings(example)
    (cascade,) = settings.cascade_list()
    assert [s.target for s in cascade.steps] == ["small", "large"]
    assert settings.affinity.enabled
