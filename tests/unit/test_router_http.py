"""The router's HTTP API over fake replicas, wired by the real RouterContainer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.container import RouterContainer
from largeforge.entrypoints.http.router_app import create_router_app
from largeforge.routing_config import load_router_settings
from tests.router_fakes import FakeEmbeddingModel, FakeReplicas

EXAMPLE = Path(__file__).parents[2] / "examples" / "router" / "experts.yaml"


@pytest.fixture
def replicas() -> FakeReplicas:
    return FakeReplicas()


def router_app(replicas: FakeReplicas, **kw: Any) -> Any:
    container = RouterContainer(settings=load_router_settings(EXAMPLE))
    container.embedding_model.override(FakeEmbeddingModel())
    container.client_factory.override(replicas)
    return create_router_app(container.router(), health_interval_s=60, **kw)


@pytest.fixture
def client(replicas: FakeReplicas) -> Iterator[TestClient[Any]]:
    with TestClient(router_app(replicas)) as test_client:
        yield test_client


def chat(text: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_routes_by_topic_with_explaining_headers(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json=chat("my python code has a bug"))
    assert response.status_code == 200
    assert response.headers["x-largeforge-expert"] == "code"
    assert response.headers["x-largeforge-route-stage"] == "keyword"
    scores = dict(p.split("=") for p in response.headers["x-largeforge-route-scores"].split(";"))
    assert set(scores) == {"code", "math", "cooking", "general"}
    assert float(scores["code"]) > float(scores["math"])
    assert response.json()["model"] == "code"
    assert response.json()["choices"][0]["message"]["content"].startswith("answer from code-")


def test_models_lists_the_router_and_each_expert(client: TestClient[Any]) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["auto", "code", "math", "cooking", "general"]


def test_bad_requests_get_openai_errors(client: TestClient[Any]) -> None:
    unknown = client.post("/v1/chat/completions", json=chat("hi", model="gpt-9"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "model"
    no_messages = client.post("/v1/chat/completions", json={"model": "auto"})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    options = client.post(
        "/v1/chat/completions", json=chat("hi", stream_options={"include_usage": True})
    )
    assert options.status_code == 400
    assert options.json()["error"]["param"] == "stream_options"


def test_an_experts_refusal_is_passed_through(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    for name in ("math-1", "math-2"):
        replicas.script(name).status = 422
    response = client.post("/v1/chat/completions", json=chat("solve this integral"))
    assert response.status_code == 422
    assert response.json()["error"]["message"].endswith("refused")


def test_no_replica_left_is_503_with_retry_after(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    for name in replicas.clients:
        replicas.script(name).down = True
    response = client.post("/v1/chat/completions", json=chat("python"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_replica_available"
    assert int(response.headers["retry-after"]) >= 1


def test_stream_relays_chunks_and_ends_a_broken_stream_with_an_error_event(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    response = client.post("/v1/chat/completions", json=chat("python", stream=True))
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["model"] for e in events[:-1]] == ["code"] * 3
    for name in ("code-1", "code-2"):
        replicas.script(name).fail_after_chunks = 2
    broken = client.post("/v1/chat/completions", json=chat("python", stream=True))
    events = [line[6:] for line in broken.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 4
    assert json.loads(events[2])["error"]["code"] == "expert_failed"
    assert events[3] == "[DONE]"


def test_router_experts_shows_breakers_and_load(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("code-1").down = True
    for _ in range(6):
        assert client.post("/v1/chat/completions", json=chat("python")).status_code == 200
    view = client.get("/router/experts").json()
    assert view["classifier"] == "hybrid"
    assert view["strategy"] == "least_outstanding"
    code = next(e for e in view["experts"] if e["name"] == "code")
    states = {r["name"]: r for r in code["replicas"]}
    assert states["code-1"]["breaker"] == "open"
    assert states["code-2"]["breaker"] == "closed"
    assert states["code-2"]["outstanding"] == 0
    metrics = client.get("/metrics").text
    assert 'largeforge_router_breaker_state{expert="code",replica="code-1"} 2.0' in metrics
    assert (
        'largeforge_router_requests_total{expert="code",outcome="ok",replica="code-2"} 6.0'
        in metrics
    )


def test_admin_api_is_off_without_admin_keys(client: TestClient[Any]) -> None:
    response = client.post("/router/experts/code/replicas", json={"url": "http://x/v1"})
    assert response.status_code == 403
    assert "admin_keys" in response.json()["error"]["message"]


def test_admin_adds_drains_and_removes_replicas(replicas: FakeReplicas) -> None:
    app = router_app(replicas, admin_keys=["admin-secret"], api_keys=["client-key"])
    admin = {"Authorization": "Bearer admin-secret"}
    user = {"Authorization": "Bearer client-key"}
    with TestClient(app) as client:
        path = "/router/experts/code/replicas"
        assert client.post(path, json={"url": "http://x/v1"}, headers=user).status_code == 401
        added = client.post(path, json={"url": "http://x/v1", "name": "code-9"}, headers=admin)
        assert added.status_code == 201
        assert added.json()["name"] == "code-9"
        for name in ("code-1", "code-2"):
            assert client.post(f"{path}/{name}/drain", headers=admin).json()["draining"]
        routed = client.post("/v1/chat/completions", json=chat("python"), headers=user)
        assert routed.headers["x-largeforge-replica"] == "code-9"
        assert client.delete(f"{path}/code-9", headers=admin).status_code == 200
        assert client.delete(f"{path}/code-9", headers=admin).status_code == 404
        assert client.post(f"{path}/code-1/resume", headers=admin).status_code == 200
        bad = client.post(path, json={"url": "http://y/v1", "weight": -1}, headers=admin)
        assert bad.status_code == 400
        names = [
            r["name"]
            for r in client.get("/router/experts", headers=user).json()["experts"][0]["replicas"]
        ]
        assert names == ["code-1", "code-2"]


def test_health_is_503_when_no_replica_of_the_default_expert_is_healthy(
    replicas: FakeReplicas,
) -> None:
    app = router_app(replicas)
    with TestClient(app) as client:  # the startup health check finds everyone healthy
        healthy = client.get("/health")
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "ok"
    for name, fake in replicas.clients.items():
        fake.script.down = name.startswith("general")
    with TestClient(app) as client:  # the startup check now finds the default expert down
        degraded = client.get("/health")
        assert degraded.status_code == 503
        body = degraded.json()
        assert body["status"] == "degraded"
        assert body["healthy_replicas"]["general"] == 0
        assert body["healthy_replicas"]["code"] == 2


def test_admin_on_an_unknown_replica_or_expert_is_404(replicas: FakeReplicas) -> None:
    admin = {"Authorization": "Bearer admin-secret"}
    with TestClient(router_app(replicas, admin_keys=["admin-secret"])) as client:
        for path in (
            "/router/experts/code/replicas/nope/drain",
            "/router/experts/nope/replicas/code-1/resume",
        ):
            response = client.post(path, headers=admin)
            assert response.status_code == 404, path
            assert "nope" in response.json()["error"]["message"]
        assert client.delete("/router/experts/nope/replicas/x", headers=admin).status_code == 404


def test_a_content_part_of_any_shape_is_routed_not_a_500(client: TestClient[Any]) -> None:
    """Found by the schema-driven fuzz (test_router_fuzz.py): `"text": 5` raised a TypeError."""
    parts = [{"type": "text", "text": 5}, {"type": "text", "text": "python code"}, "x"]
    body = {"model": "auto", "messages": [{"role": "user", "content": parts}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-largeforge-expert"] == "code"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_python",
            "description": "Run a Python snippet and return its output.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "timeout_s": {"type": "number"}},
                "required": ["code"],
            },
            "strict": True,
        },
    }
]
TOOL_FIELDS = {
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "run_python"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "run_python", "arguments": '{"code": "print(1.50)"}'},
}


def received(replicas: FakeReplicas, name: str) -> dict[str, Any]:
    return replicas.clients[name].received[-1][1]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_response_format_reach_the_expert_unchanged(
    client: TestClient[Any], replicas: FakeReplicas, stream: bool
) -> None:
    body = chat("my python code has a bug", stream=stream, **TOOL_FIELDS)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    sent = received(replicas, response.headers["x-largeforge-replica"])
    for field, value in TOOL_FIELDS.items():
        assert json.dumps(sent[field]) == json.dumps(value), field  # same values, same order
    assert sent["messages"] == body["messages"]


def test_a_tool_conversation_routes_by_the_last_user_message(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    """Tool results and the assistant's calls follow the question; they are not classified
    (this tool result alone would route to cooking)."""
    messages = [
        {"role": "system", "content": "You may run code."},
        {"role": "user", "content": "why does my python script fail?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "bake the bread in the oven"},
    ]
    response = client.post(
        "/v1/chat/completions", json={"model": "auto", "messages": messages, **TOOL_FIELDS}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-largeforge-expert"] == "code"
    assert response.headers["x-largeforge-route-stage"] == "keyword"
    assert received(replicas, response.headers["x-largeforge-replica"])["messages"] == messages


def test_a_tool_call_answer_and_its_streamed_deltas_are_relayed_unchanged(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    answer = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    first = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "run_python", "arguments": ""}}  # fmt: skip
    pieces = [first, {"index": 0, "function": {"arguments": '{"code": '}},
              {"index": 0, "function": {"arguments": '"print(1.50)"}'}}]  # fmt: skip
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "created": 7,
         "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
        for piece in pieces
    ] + [{"id": "c", "object": "chat.completion.chunk", "created": 7,
          "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]  # fmt: skip
    for name in ("code-1", "code-2"):
        replicas.script(name).answer = answer
        replicas.script(name).stream = chunks
    body = chat("python please", **TOOL_FIELDS)
    plain = client.post("/v1/chat/completions", json=body)
    assert plain.json()["choices"][0]["message"] == answer
    streamed = client.post("/v1/chat/completions", json=body | {"stream": True})
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    relayed = [json.loads(e) for e in events[:-1]]
    expected = json.loads(json.dumps(chunks))  # a snapshot: nothing the router does can touch it
    assert [{k: v for k, v in c.items() if k != "model"} for c in relayed] == expected
    assert {c["model"] for c in relayed} == {"code"}
