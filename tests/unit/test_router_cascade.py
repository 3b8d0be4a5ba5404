"""Cascades and session affinity through the router's HTTP API, over scripted fake replicas,
wired by the real RouterContainer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.container import RouterContainer
from largeforge.entrypoints.http.router_app import SessionKeys, create_router_app
from largeforge.routing_config import RouterSettings
from tests.router_fakes import FakeReplicas

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
VALID = {"role": "assistant", "content": '{"answer": 4}'}
INVALID = {"role": "assistant", "content": '{"answer": "four"}'}


def config(**extra: Any) -> dict[str, Any]:
    return {
        "default_expert": "large",
        "classifier": "keyword",
        "strategy": "least_outstanding",
        "experts": [
            {"name": "small", "cost": {"prompt": 0.1, "completion": 0.2},
             "replicas": [{"name": "small-1", "url": "http://s1/v1"}]},
            {"name": "large", "cost": {"prompt": 1.0, "completion": 2.0},
             "replicas": [{"name": "large-1", "url": "http://l1/v1"},
                          {"name": "large-2", "url": "http://l2/v1"}]},
        ],
        "cascades": [
            {"name": "json", "steps": [
                {"expert": "small", "checks": [{"kind": "json_schema"}]},
                {"expert": "large", "checks": [{"kind": "json_schema"}]}]},
            {"name": "sure", "on_exhausted": "last", "steps": [
                {"expert": "small", "checks": [{"kind": "logprob", "mean": -1.0}]},
                {"expert": "large", "checks": [{"kind": "logprob", "mean": -1.0}]}]},
            {"name": "judged", "steps": [
                {"expert": "small", "checks": [{"kind": "judge", "judge": "large"}]},
                {"expert": "large"}]},
        ],
    } | extra  # fmt: skip


@pytest.fixture
def replicas() -> FakeReplicas:
    return FakeReplicas()


def app(replicas: FakeReplicas, admin_keys: tuple[str, ...] = (), **extra: Any) -> Any:
    settings = RouterSettings.model_validate(config(**extra))
    container = RouterContainer(settings=settings)
    container.client_factory.override(replicas)
    sessions = SessionKeys(settings.affinity.header, settings.affinity.use_user_field)
    return create_router_app(
        container.router(),
        health_interval_s=60,
        cascades=container.cascades(),
        sessions=sessions,
        admin_keys=admin_keys,
    )


@pytest.fixture
def client(replicas: FakeReplicas) -> Iterator[TestClient[Any]]:
    with TestClient(app(replicas)) as test_client:
        yield test_client


def ask(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "2+2?"}], **extra}


def asked(replicas: FakeReplicas, *names: str) -> int:
    return sum(len(replicas.clients[n].received) for n in names)


def test_a_failing_small_answer_is_escalated_and_never_sent(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").answer = INVALID
    for name in ("large-1", "large-2"):
        replicas.script(name).answer = VALID
    response = client.post("/v1/chat/completions", json=ask("json", response_format=FORMAT))
    assert response.status_code == 200
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == {"answer": 4}
    headers = response.headers
    assert headers["x-largeforge-cascade"] == "json"
    assert headers["x-largeforge-cascade-step"] == "2"
    assert headers["x-largeforge-expert"] == "large"
    reason = headers["x-largeforge-cascade-reason"]
    assert reason.startswith("1:small: json_schema: $.answer")
    assert "2:large: json_schema passed" in reason
    # small: 3 prompt and 3 completion tokens at 0.1/0.2 per 1k; large at 1.0/2.0
    assert float(headers["x-largeforge-cascade-cost"]) == pytest.approx(0.0009 + 0.009)
    metrics = client.get("/metrics").text
    assert (
        'largeforge_router_cascade_answers_total{cascade="json",expert="large",step="2"} 1.0'
        in metrics
    )
    assert (
        "largeforge_router_cascade_escalations_total"
        '{cascade="json",reason="json_schema",step="1"} 1.0' in metrics
    )
    assert 'largeforge_router_cost_total{expert="large"} 0.009' in metrics


def test_a_passing_small_answer_is_sent_and_the_large_expert_not_asked(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").answer = VALID
    response = client.post("/v1/chat/completions", json=ask("json", response_format=FORMAT))
    assert response.status_code == 200
    assert response.headers["x-largeforge-cascade-step"] == "1"
    assert response.json()["model"] == "small"
    assert asked(replicas, "large-1", "large-2") == 0


def test_when_every_step_fails_no_invalid_answer_reaches_the_client(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    for name in ("small-1", "large-1", "large-2"):
        replicas.script(name).answer = INVALID
    response = client.post("/v1/chat/completions", json=ask("json", response_format=FORMAT))
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "cascade_exhausted"
    assert "1:small: json_schema" in error["message"]
    assert "2:large: json_schema" in error["message"]
    assert (
        'largeforge_router_cascade_exhausted_total{cascade="json"} 1.0'
        in client.get("/metrics").text
    )


def test_logprob_check_asks_for_logprobs_and_hides_them_again(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").logprobs = [-0.2, -4.0, -3.0]
    for name in ("large-1", "large-2"):
        replicas.script(name).logprobs = [-0.1, -0.3]
    response = client.post("/v1/chat/completions", json=ask("sure"))
    assert response.status_code == 200
    assert response.headers["x-largeforge-cascade-step"] == "2"
    assert "1:small: logprob: mean -2.400 < -1" in response.headers["x-largeforge-cascade-reason"]
    assert response.json()["choices"][0]["logprobs"] is None  # the client did not ask
    assert replicas.clients["small-1"].received[0][1]["logprobs"] is True
    asked_for = client.post("/v1/chat/completions", json=ask("sure", logprobs=True))
    assert asked_for.json()["choices"][0]["logprobs"]["content"]


def test_on_exhausted_last_sends_the_last_answer_with_its_failed_check(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    for name in ("small-1", "large-1", "large-2"):
        replicas.script(name).logprobs = [-5.0]
    response = client.post("/v1/chat/completions", json=ask("sure"))
    assert response.status_code == 200
    assert response.headers["x-largeforge-cascade-step"] == "2"
    assert "2:large: logprob: mean -5.000 < -1" in response.headers["x-largeforge-cascade-reason"]


def test_on_exhausted_last_names_the_step_whose_answer_it_sends(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").logprobs = [-5.0]
    for name in ("large-1", "large-2"):
        replicas.script(name).down = True
    response = client.post("/v1/chat/completions", json=ask("sure"))
    assert response.status_code == 200
    assert response.headers["x-largeforge-cascade-step"] == "1"  # small's answer, not step 2's
    assert response.headers["x-largeforge-expert"] == "small"
    assert "2:large: unavailable" in response.headers["x-largeforge-cascade-reason"]


def test_an_unavailable_step_is_escalated_past(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").down = True
    for name in ("large-1", "large-2"):
        replicas.script(name).answer = VALID
    response = client.post("/v1/chat/completions", json=ask("json", response_format=FORMAT))
    assert response.status_code == 200
    assert response.headers["x-largeforge-cascade-reason"].startswith("1:small: unavailable")
    assert 'reason="unavailable"' in client.get("/metrics").text


def test_a_refused_request_is_passed_through_without_escalating(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").status = 400
    response = client.post("/v1/chat/completions", json=ask("json", response_format=FORMAT))
    assert response.status_code == 400
    assert asked(replicas, "large-1", "large-2") == 0


def test_a_streamed_cascade_replays_only_the_answer_that_passed(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    replicas.script("small-1").stream = [
        {"id": "s", "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": {"content": "not json"}, "finish_reason": "stop"}]},
    ]  # fmt: skip
    for name in ("large-1", "large-2"):
        replicas.script(name).stream = [
            {"id": "l", "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {"content": '{"answer":'}, "finish_reason": None}]},
            {"id": "l", "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {"content": " 4}"}, "finish_reason": "stop"}]},
            {"id": "l", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}},
        ]  # fmt: skip
    body = ask("json", response_format=FORMAT, stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["x-largeforge-cascade-step"] == "2"
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[5:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == '{"answer": 4}'
    assert all("usage" not in c for c in chunks)  # not asked for: the usage chunk is dropped
    forwarded = replicas.clients["small-1"].received[0][1]
    assert forwarded["stream_options"] == {"include_usage": True}  # the cost needs it


def test_the_judge_decides_whether_to_escalate(
    client: TestClient[Any], replicas: FakeReplicas
) -> None:
    for name in ("large-1", "large-2"):
        replicas.script(name).answer = {"role": "assistant", "content": "No."}
    response = client.post("/v1/chat/completions", json=ask("judged"))
    assert response.headers["x-largeforge-cascade-step"] == "2"
    assert "1:small: judge: large said 'No.'" in response.headers["x-largeforge-cascade-reason"]
    judged = [b for n in ("large-1", "large-2") for _p, b in replicas.clients[n].received]
    prompt = judged[0]["messages"][0]["content"]
    assert "2+2?" in prompt
    assert "answer from small-1" in prompt
    for name in ("large-1", "large-2"):
        replicas.script(name).answer = {"role": "assistant", "content": "Yes, it is."}
    passed = client.post("/v1/chat/completions", json=ask("judged"))
    assert passed.headers["x-largeforge-cascade-step"] == "1"


def test_cascades_are_models_and_chat_only(client: TestClient[Any]) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["auto", "small", "large", "json", "sure", "judged"]
    response = client.post("/v1/completions", json={"model": "json", "prompt": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def replica_of(client: TestClient[Any], **extra: Any) -> tuple[str, str | None]:
    response = client.post("/v1/chat/completions", json=ask("large", **extra))
    assert response.status_code == 200
    return response.headers["x-largeforge-replica"], response.headers.get(
        "x-largeforge-session-moved"
    )


def test_a_session_stays_on_its_replica_and_moves_once_when_it_fails(
    replicas: FakeReplicas,
) -> None:
    with TestClient(app(replicas, affinity={"enabled": True})) as client:
        without = {replica_of(client)[0] for _ in range(4)}
        assert without == {"large-1", "large-2"}  # balanced without a session
        first = {replica_of(client, user="alice") for _ in range(10)}
        assert len(first) == 1
        ((pinned, moved),) = first
        assert moved is None
        replicas.script(pinned).down = True
        turns = [replica_of(client, user="alice") for _ in range(10)]
        other = "large-2" if pinned == "large-1" else "large-1"
        assert turns[0] == (other, f"{pinned}->{other}")
        assert turns[1:] == [(other, None)] * 9
        replicas.script(pinned).down = False  # back: the session stays where it moved
        assert replica_of(client, user="alice") == (other, None)
        bob = client.post(
            "/v1/chat/completions", json=ask("large"), headers={"x-session-id": "bob"}
        ).headers["x-largeforge-replica"]
        for _ in range(5):
            again = client.post(
                "/v1/chat/completions", json=ask("large"), headers={"x-session-id": "bob"}
            )
            assert again.headers["x-largeforge-replica"] == bob
        assert (
            'largeforge_router_session_moves_total{expert="large"} 1.0'
            in client.get("/metrics").text
        )


def test_without_affinity_a_session_key_pins_nothing(replicas: FakeReplicas) -> None:
    with TestClient(app(replicas)) as client:
        seen = {replica_of(client, user="alice")[0] for _ in range(4)}
    assert seen == {"large-1", "large-2"}


def test_admin_adds_an_expert_on_an_adapter_and_routes_to_it(replicas: FakeReplicas) -> None:
    """An expert added at run time (a replica whose model is a LoRA adapter a server loaded)
    is a model at once, gets its keywords' queries, and can be removed again."""
    admin = {"Authorization": "Bearer root"}
    with TestClient(app(replicas, admin_keys=("root",))) as client:
        expert = {
            "name": "sql", "keywords": {"sql": 2.0, "join": 1.0},
            "cost": {"prompt": 0.3, "completion": 0.3},
            "replicas": [{"name": "sql-1", "url": "http://adapters/v1", "model": "sql-lora"}],
        }  # fmt: skip
        assert client.post("/router/experts", json=expert).status_code == 401
        added = client.post("/router/experts", json=expert, headers=admin)
        assert added.status_code == 201, added.text
        assert added.json()["replicas"][0]["model"] == "sql-lora"
        assert "sql" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        routed = client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "a sql join"}]},
        )
        assert routed.headers["x-largeforge-expert"] == "sql"
        _path, body = replicas.clients["sql-1"].received[-1]
        assert body["model"] == "sql-lora"  # the adapter's id on the replica
        taken = client.post("/router/experts", json=expert, headers=admin)
        assert taken.status_code == 400
        bad = client.post("/router/experts", json={"name": "x", "weight": -1}, headers=admin)
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "weight"
        assert client.delete("/router/experts/small", headers=admin).status_code == 400  # a step
        assert client.delete("/router/experts/large", headers=admin).status_code == 400  # default
        assert client.delete("/router/experts/nope", headers=admin).status_code == 404
        assert client.delete("/router/experts/sql", headers=admin).status_code == 200
        assert replicas.clients["sql-1"].closed
        assert "sql" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
        again = client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "a sql join"}]},
        )
        assert again.headers["x-largeforge-expert"] == "large"  # the default once more


def test_a_step_may_be_the_whole_route(replicas: FakeReplicas) -> None:
    """A step named after the router is classified like `model: auto` (here by keywords)."""
    experts = config()["experts"]
    experts[0] = {**experts[0], "keywords": {"sum": 1.0}}
    routed = {"name": "routed", "steps": [
        {"expert": "auto", "checks": [{"kind": "regex", "pattern": "^never$"}]},
        {"expert": "large"}]}  # fmt: skip
    with TestClient(app(replicas, experts=experts, cascades=[routed])) as client:
        body = {"model": "routed", "messages": [{"role": "user", "content": "the sum of 2 and 2"}]}
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    reason = response.headers["x-largeforge-cascade-reason"]
    assert reason.startswith("1:small: regex: no match")  # the route chose small for step 1
    assert response.headers["x-largeforge-expert"] == "large"
