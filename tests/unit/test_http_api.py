"""The OpenAI-compatible HTTP API over a fake engine (Litestar's test client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.entrypoints.http.app import create_app

KEY = "sk-test-key"


@pytest.fixture
def client(container: Any) -> Iterator[TestClient[Any]]:
    app = create_app(container, load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def keyed_client(container: Any) -> Iterator[TestClient[Any]]:
    app = create_app(container, api_keys=["other-key", KEY], load_in_background=False)
    with TestClient(app) as test_client:
        yield test_client


def chat_body(**overrides: Any) -> dict[str, Any]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hello big world"}]}
    return body | overrides


def assert_openai_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_health_and_models(client: TestClient[Any]) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": ["fake-model"]}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["fake-model"]


def test_chat_completion_shape_and_usage(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=2, temperature=0))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "hello big", "refusal": None}
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_completion_tokens_wins_and_text_parts_are_joined(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    parts = [{"type": "text", "text": "a b "}, {"type": "text", "text": "c"}]
    body = chat_body(
        messages=[{"role": "user", "content": parts}],
        max_tokens=1,
        max_completion_tokens=5,
        temperature=0,
    )
    response = client.post("/v1/chat/completions", json=body)
    assert response.json()["choices"][0]["message"]["content"] == "a b c"
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    params = fakes["engine"].requests[-1][1]
    assert params.max_tokens == 5
    assert params.greedy


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"n": 17}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools.0.function.parameters",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"messages": [{"role": "tool", "content": "3"}]}, "messages.0.tool_call_id"),
        (
            {"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]},
            "messages.0.tool_call_id",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]},
            "messages.0.tool_calls",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"structured_outputs": {"json": "{nope"}}, "structured_outputs"),
        ({"seed": 2**70}, "seed"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(
    client: TestClient[Any], overrides: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(**overrides))
    error = assert_openai_error(response, 400, param)
    assert error["type"] == "invalid_request_error"


def test_missing_model_field_is_400(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json={"messages": []})
    assert_openai_error(response, 400, "model")


def test_malformed_json_is_400(client: TestClient[Any]) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400)


def test_default_max_tokens_fills_the_remaining_context(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    response = client.post("/v1/chat/completions", json=chat_body())
    assert response.status_code == 200, response.text
    prompt_ids, params, _ = fakes["engine"].requests[-1]
    assert params.max_tokens == 64 - len(prompt_ids)


def test_prompt_over_the_context_window_is_400(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=1000))
    error = assert_openai_error(response, 400, "messages")
    assert error["code"] == "context_length_exceeded"
    assert "64" in error["message"]


@pytest.mark.parametrize("prompt", ["", " ", ["a", ""]])
def test_a_prompt_without_tokens_is_400(client: TestClient[Any], prompt: Any) -> None:
    """No engine can continue nothing (vLLM refuses it too); the fuzzer found the 500."""
    body = {"model": "fake-model", "prompt": prompt, "echo": True, "logprobs": 2}
    error = assert_openai_error(client.post("/v1/completions", json=body), 400, "prompt")
    assert error["message"] == "the prompt has no tokens"


def test_unknown_model_is_404(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(model="gpt-4"))
    error = assert_openai_error(response, 404, "model")
    assert error["code"] == "model_not_found"


def test_unknown_route_is_404_in_openai_shape(client: TestClient[Any]) -> None:
    assert_openai_error(client.get("/v1/nothing"), 404)


def test_api_key_required_on_v1_but_not_on_health(keyed_client: TestClient[Any]) -> None:
    assert keyed_client.get("/health").status_code == 200
    error = assert_openai_error(keyed_client.post("/v1/chat/completions", json=chat_body()), 401)
    assert error["code"] == "invalid_api_key"
    assert_openai_error(keyed_client.get("/v1/models"), 401)
    wrong = {"Authorization": "Bearer sk-wrong"}
    assert_openai_error(keyed_client.get("/v1/models", headers=wrong), 401)
    right = {"Authorization": f"Bearer {KEY}"}
    assert keyed_client.get("/v1/models", headers=right).status_code == 200
    ok = keyed_client.post("/v1/chat/completions", json=chat_body(max_tokens=4), headers=right)
    assert ok.status_code == 200


def test_health_is_503_while_the_model_loads(container: Any, fakes: dict[str, Any]) -> None:
    import threading

    from largeforge.application.serving import TextGeneration

    gate = threading.Event()

    def slow_chat() -> Any:
        gate.wait(10)
        return TextGeneration([fakes["engine"]])

    container.generation.override(__import__("dependency_injector").providers.Callable(slow_chat))
    try:
        with TestClient(create_app(container)) as test_client:
            response = test_client.get("/health")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert_openai_error(test_client.get("/v1/models"), 503)
            gate.set()
            for _ in range(100):
                if test_client.get("/health").status_code == 200:
                    break
                threading.Event().wait(0.05)
            assert test_client.get("/health").status_code == 200
    finally:
        gate.set()
        container.generation.reset_override()


def test_load_failure_is_reported_by_health(container: Any) -> None:
    from dependency_injector import providers

    def broken() -> Any:
        raise RuntimeError("weights are corrupt")

    container.generation.override(providers.Callable(broken))
    try:
        with TestClient(create_app(container, load_in_background=False)) as test_client:
            response = test_client.get("/health")
            assert response.status_code == 503
            assert "weights are corrupt" in response.json()["error"]
            error = assert_openai_error(test_client.get("/v1/models"), 503)
            assert "failed to load" in error["message"]
    finally:
        container.generation.reset_override()
