"""Tools and structured outputs through the HTTP API over the fake engine.

The fake engine answers with a script of token texts, so these tests pin what the server makes
of a model's output: calls parsed out of the text (none of their syntax in `content`), ids,
finish reasons, streamed `delta.tool_calls` pieces that join to the unstreamed answer, and the
constraint and tools each request hands the engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.domain.tools import ConstraintKind
from largeforge.entrypoints.http.app import create_app
from tests.fakes import FakeInferenceEngine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
CALL_TEXT = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
)


def chunks(text: str, size: int = 3) -> list[str]:
    """`text` as the token texts of a script (3 characters a token: triggers get split)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.fixture
def engine(fakes: dict[str, Any]) -> FakeInferenceEngine:
    fake: FakeInferenceEngine = fakes["engine"]
    fake._context_window = 4096  # room for scripted calls
    return fake


@pytest.fixture
def client(container: Any, engine: FakeInferenceEngine) -> Iterator[TestClient[Any]]:
    app = create_app(container, load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


def chat(**overrides: Any) -> dict[str, Any]:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 400,
    }
    return body | overrides


def sse(text: str) -> list[dict[str, Any]]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_forced_call_is_parsed_out_of_the_text(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    engine.script = chunks(CALL_TEXT)
    choice_ = {"type": "function", "function": {"name": "get_weather"}}
    response = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice=choice_))
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
    # the engine saw the tools in the prompt and a tool-call grammar
    assert engine.rendered_tools[-1] == ("get_weather",)
    params = engine.requests[-1][1]
    assert params.constraint is not None
    assert params.constraint.kind is ConstraintKind.STRUCTURAL_TAG
    assert "get_weather" in params.constraint.spec


def test_auto_keeps_text_around_a_call_as_content_and_a_text_answer_has_no_calls(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    engine.script = chunks("Let me check. " + CALL_TEXT)
    body = client.post("/v1/chat/completions", json=chat(tools=[WEATHER])).json()
    message = body["choices"][0]["message"]
    assert message["content"].strip() == "Let me check."
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather"]
    engine.script = chunks("It is sunny <b>today</b> < tool_call")
    body = client.post("/v1/chat/completions", json=chat(tools=[WEATHER])).json()
    (choice,) = body["choices"]
    assert choice["message"]["content"] == "It is sunny <b>today</b> < tool_call"
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


def test_none_renders_no_tools_and_constrains_nothing(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    response = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="none"))
    assert response.status_code == 200
    assert engine.rendered_tools[-1] == ()
    assert engine.requests[-1][1].constraint is None


def test_parallel_calls_and_the_stream_joins_to_the_unstreamed_answer(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    second = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    engine.script = chunks(CALL_TEXT + "\n" + second, size=2)
    body = chat(tools=[WEATHER, TIME], tool_choice="required", temperature=0)
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    calls = plain["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls}) == 2
    assert plain["finish_reason"] == "tool_calls"

    events = sse(client.post("/v1/chat/completions", json=body | {"stream": True}).text)
    deltas = [e["choices"][0] for e in events if e["choices"]]
    content = "".join(d["delta"].get("content") or "" for d in deltas)
    assert "<tool_call" not in content
    assert content.strip() == ""
    pieces = [p for d in deltas for p in d["delta"].get("tool_calls") or []]
    heads = [p for p in pieces if "id" in p]
    assert [(h["index"], h["type"], h["function"]["name"]) for h in heads] == [
        (0, "function", "get_weather"),
        (1, "function", "get_time"),
    ]
    assert all(h["function"]["arguments"] == "" for h in heads)
    assert all(set(p) == {"index", "function"} for p in pieces if "id" not in p)
    for index, call in enumerate(calls):
        streamed = "".join(p["function"]["arguments"] for p in pieces if p["index"] == index)
        assert streamed == call["function"]["arguments"]
    assert len([p for p in pieces if p["index"] == 0]) > 2  # arguments arrive in fragments
    finishes = [d["finish_reason"] for d in deltas if d["finish_reason"]]
    assert finishes == ["tool_calls"]


def test_a_tool_result_round_trip_is_accepted(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    engine.script = chunks("It is sunny.")
    response = client.post("/v1/chat/completions", json=chat(messages=messages, tools=[WEATHER]))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "It is sunny."


JSON = ConstraintKind.JSON_SCHEMA
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "w", "schema": {"type": "array"}, "strict": True},
}


@pytest.mark.parametrize(
    ("body", "kind", "spec"),
    [
        ({"response_format": {"type": "json_object"}}, JSON, {"type": "object"}),
        ({"response_format": SCHEMA_FORMAT}, JSON, {"type": "array"}),
        ({"structured_outputs": {"choice": ["yes", "no"]}}, ConstraintKind.CHOICE, ["yes", "no"]),
        ({"structured_outputs": {"regex": "[a-z]+"}}, ConstraintKind.REGEX, "[a-z]+"),
        ({"structured_outputs": {"json": '{"type": "null"}'}}, JSON, {"type": "null"}),
    ],
)
def test_response_formats_reach_the_engine_as_constraints(
    client: TestClient[Any], engine: FakeInferenceEngine, body: dict[str, Any], kind: Any, spec: Any
) -> None:
    response = client.post("/v1/chat/completions", json=chat(**body))
    assert response.status_code == 200, response.text
    constraint = engine.requests[-1][1].constraint
    assert constraint is not None
    assert constraint.kind is kind
    assert constraint.value() == spec
    assert engine.checked[-1] == constraint


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tools"),
    ],
)
def test_a_grammar_the_engine_cannot_compile_is_a_400_naming_the_param(
    client: TestClient[Any], engine: FakeInferenceEngine, body: dict[str, Any], param: str
) -> None:
    engine.refuse_constraints = True
    before = len(engine.requests)
    response = client.post("/v1/chat/completions", json=chat(**body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "refuses" in error["message"]
    assert len(engine.requests) == before  # refused before generating


def test_each_choice_gets_its_own_calls(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    engine.script = chunks(CALL_TEXT)
    body = chat(tools=[WEATHER], tool_choice="required", n=2, seed=1)
    choices = client.post("/v1/chat/completions", json=body).json()["choices"]
    assert [len(c["message"]["tool_calls"]) for c in choices] == [1, 1]
    ids = {c["message"]["tool_calls"][0]["id"] for c in choices}
    assert len(ids) == 2


def test_auto_with_a_response_format_allows_the_format_or_calls(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    engine.script = chunks('{"a": 1}')
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    response = client.post("/v1/chat/completions", json=chat(tools=[WEATHER], response_format=fmt))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == '{"a": 1}'
    constraint = engine.requests[-1][1].constraint
    assert constraint.kind is ConstraintKind.STRUCTURAL_TAG
    either = constraint.value()["format"]
    assert either["type"] == "or"
    answer, calls = either["elements"]
    assert answer["type"] == "json_schema"
    assert answer["json_schema"] == {"type": "object"}
    assert "get_weather" in json.dumps(calls)


def test_stop_strings_apply_to_the_content_never_inside_a_call(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    engine.script = chunks("Sure. " + CALL_TEXT + " Done. Bye now")
    body = chat(tools=[WEATHER], stop=["\n", "Paris", "Bye"])
    choice = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    content = choice["message"]["content"]
    assert content.startswith("Sure.")
    assert content.rstrip().endswith("Done.")  # cut at "Bye", as a stop string does
    assert "now" not in content
    assert choice["finish_reason"] == "tool_calls"
    # the call's arguments hold "Paris" and its syntax newlines: not cut, and not content
    (call,) = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}


def test_a_call_of_an_undeclared_function_is_never_returned(
    client: TestClient[Any], engine: FakeInferenceEngine
) -> None:
    other = '<tool_call>\n{"name": "rm_rf", "arguments": {"path": "/"}}\n</tool_call>'
    engine.script = chunks(other + "\n" + CALL_TEXT)
    choice = client.post("/v1/chat/completions", json=chat(tools=[WEATHER])).json()["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert "rm_rf" not in json.dumps(choice)
    events = sse(client.post("/v1/chat/completions", json=chat(tools=[WEATHER], stream=True)).text)
    pieces = [
        p for e in events if e["choices"] for p in e["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert {p["index"] for p in pieces} == {0}  # numbered from 0 without the dropped call
    assert "rm_rf" not in json.dumps(events)


def test_mistral_call_ids_are_nine_alphanumerics(
    container: Any, engine: FakeInferenceEngine
) -> None:
    engine.tool_format = "mistral"
    engine.script = chunks('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    app = create_app(container, load_in_background=False)
    with TestClient(app) as mistral:
        body = mistral.post("/v1/chat/completions", json=chat(tools=[WEATHER])).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert len(call["id"]) == 9
    assert call["id"].isalnum()


@pytest.mark.parametrize(
    "parameters",
    [{"type": "string"}, {"anyOf": [{"type": "object"}, {"type": "null"}]}, {"type": ["object"]}],
)
def test_parameters_that_are_not_an_object_schema_are_a_400(
    client: TestClient[Any], parameters: dict[str, Any]
) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    response = client.post("/v1/chat/completions", json=chat(tools=[tool]))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "tools.0.function.parameters"
