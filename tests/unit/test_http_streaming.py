"""Streaming, text completions, overload, body limits and metrics over the fake engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.entrypoints.http.app import create_app
from tests.unit.test_http_api import assert_openai_error, chat_body


@pytest.fixture
def client(container: Any) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(container, load_in_background=False)) as test_client:
        yield test_client


def sse_events(text: str) -> list[Any]:
    """Parsed `data:` payloads; `[DONE]` kept as the string."""
    assert text.endswith("data: [DONE]\n\n")
    events = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        payload = block.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_chat_stream_joins_to_the_non_streamed_answer(client: TestClient[Any]) -> None:
    body = chat_body(temperature=0, max_tokens=10)
    plain = client.post("/v1/chat/completions", json=body).json()
    response = client.post("/v1/chat/completions", json=body | {"stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ]
    assert finishes == [plain["choices"][0]["finish_reason"]]
    assert "usage" not in chunks[0]


def test_include_usage_adds_a_final_chunk_with_the_totals(client: TestClient[Any]) -> None:
    body = chat_body(max_tokens=2, stream=True, stream_options={"include_usage": True})
    chunks = sse_events(client.post("/v1/chat/completions", json=body).text)[:-1]
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 2
    total = last["usage"]["prompt_tokens"] + 2
    assert last["usage"]["total_tokens"] == total


def test_n_choices_stream_each_with_one_finish(client: TestClient[Any]) -> None:
    body = chat_body(n=3, stream=True, temperature=0)
    chunks = sse_events(client.post("/v1/chat/completions", json=body).text)[:-1]
    finished = [ch["index"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(finished) == [0, 1, 2]


def test_failure_after_streaming_began_sends_an_error_event_then_done(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    fakes["engine"].fail_after = 1
    response = client.post("/v1/chat/completions", json=chat_body(stream=True, temperature=0))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "server_error"
    assert fakes["engine"].active == 0


def test_chat_logprobs_shape(client: TestClient[Any]) -> None:
    body = chat_body(max_tokens=2, temperature=0, logprobs=True, top_logprobs=3)
    content = client.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]
    tokens = content["content"]
    assert [t["token"] for t in tokens] == ["hello", "big"]
    assert all(len(t["top_logprobs"]) == 3 for t in tokens)
    assert tokens[0]["bytes"] == list(b"hello")


def test_completions_with_several_prompts_and_token_ids(client: TestClient[Any]) -> None:
    body = {"model": "fake-model", "prompt": ["<user> a b", "<user> c"], "temperature": 0}
    result = client.post("/v1/completions", json=body | {"n": 2}).json()
    assert result["object"] == "text_completion"
    assert [c["index"] for c in result["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in result["choices"]] == ["a b", "a b", "c", "c"]
    assert result["usage"]["prompt_tokens"] == 3 + 2
    ids = client.post("/v1/completions", json={"model": "fake-model", "prompt": [5, 6]})
    assert ids.status_code == 200, ids.text


def test_echo_with_logprobs_scores_the_prompt(client: TestClient[Any]) -> None:
    body = {
        "model": "fake-model",
        "prompt": "<user> x y",
        "echo": True,
        "logprobs": 1,
        "max_tokens": 1,
        "temperature": 0,
    }
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == "<user> x yx"
    assert logprobs["tokens"] == ["<user>", "x", "y", "x"]
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:3] == [-1.0, -1.0]
    assert logprobs["text_offset"][:2] == [0, 6]


def test_completion_stream(client: TestClient[Any]) -> None:
    body = {"model": "fake-model", "prompt": "<user> p q", "stream": True, "temperature": 0}
    chunks = sse_events(client.post("/v1/completions", json=body).text)[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "p q"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_full_queue_is_429_with_retry_after(client: TestClient[Any], fakes: dict[str, Any]) -> None:
    fakes["engine"].overloaded = True
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json=chat_body(stream=stream))
        error = assert_openai_error(response, 429)
        assert error["code"] == "queue_full"
        assert response.headers["retry-after"] == "3"


def test_oversized_body_is_413(container: Any) -> None:
    app = create_app(container, load_in_background=False, max_body_bytes=2048)
    with TestClient(app) as small:
        huge = chat_body(messages=[{"role": "user", "content": "x " * 4000}])
        assert_openai_error(small.post("/v1/chat/completions", json=huge), 413)


def test_metrics_count_requests_tokens_and_latency(client: TestClient[Any]) -> None:
    client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    client.post("/v1/chat/completions", json=chat_body(model="nope"))
    text = client.get("/metrics").text
    assert 'largeforge_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    assert 'largeforge_requests_total{endpoint="/v1/chat/completions",status="404"} 1.0' in text
    assert 'largeforge_generation_tokens_total{model="fake-model"} 2.0' in text
    assert "largeforge_time_to_first_token_seconds_count" in text
    assert "largeforge_e2e_request_latency_seconds_bucket" in text
    assert "largeforge_num_requests_waiting 0.0" in text
    assert "largeforge_num_requests_running 0.0" in text
