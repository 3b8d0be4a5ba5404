"""Adapters loaded and unloaded at run time: the serving use case over the fake engine (an
unload waits for the adapter's running requests; new ones are refused at once) and vLLM's
`/v1/load_lora_adapter` and `/v1/unload_lora_adapter` routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.application.serving import TextGeneration
from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import AdapterNotLoadedError, InvalidRequestError, ModelNotServedError
from largeforge.domain.generation import ChatRequest, SamplingParams
from largeforge.entrypoints.http.app import create_app
from tests.fakes import FakeInferenceEngine

KEY = "sk-lora"


def request(model: str, max_tokens: int = 3) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message(Role.USER, "one two three"),),
        params=SamplingParams(max_tokens=max_tokens, temperature=0),
    )


def engine() -> FakeInferenceEngine:
    fake = FakeInferenceEngine()
    fake.adapter_loading = True
    return fake


def test_a_loaded_adapter_is_a_model_at_once_and_answers_with_its_weights() -> None:
    async def main() -> None:
        fake = engine()
        service = TextGeneration([fake])
        await service.load_adapter("sql", "/adapters/sql")
        assert service.models() == ("fake-model", "sql")
        assert service.base_of("sql") == "fake-model"
        reply = await service.chat(request("sql"))
        assert reply.choices[0].text.startswith("[sql]")  # the fake marks its adapter's rows
        assert fake.requests[-1][2] == "sql"
        with pytest.raises(InvalidRequestError, match="already been loaded"):
            await service.load_adapter("sql", "/adapters/other")
        with pytest.raises(InvalidRequestError, match="already been loaded"):
            await service.load_adapter("fake-model", "/adapters/x")  # the base's id is taken
        with pytest.raises(InvalidRequestError, match=r"no adapter_config\.json"):
            await service.load_adapter("bad", "/elsewhere")
        assert service.models() == ("fake-model", "sql")

    asyncio.run(main())


def test_unloading_waits_for_running_requests_and_refuses_new_ones_at_once() -> None:
    async def main() -> None:
        fake = engine()
        service = TextGeneration([fake])
        await service.load_adapter("sql", "/adapters/sql")
        fake.hold = asyncio.Event()
        running = asyncio.create_task(service.chat(request("sql", max_tokens=4)))
        base = asyncio.create_task(service.chat(request("fake-model", max_tokens=4)))
        while fake.running.get("sql", 0) == 0:  # the request reached the engine
            await asyncio.sleep(0)
        unloading = asyncio.create_task(service.unload_adapter("sql"))
        await asyncio.sleep(0)
        assert "sql" not in service.models()  # gone for new requests at once
        with pytest.raises(ModelNotServedError):
            await service.chat(request("sql"))
        assert not unloading.done()
        assert fake.unloaded == []  # its running request still holds it
        fake.hold.set()
        reply = await running  # the running request finishes with the adapter
        assert reply.choices[0].text.startswith("[sql]")
        await unloading
        assert fake.unloaded == [("sql", 0)]  # freed once nothing ran with it
        await base
        with pytest.raises(AdapterNotLoadedError, match="cannot be found"):
            await service.unload_adapter("sql")
        with pytest.raises(AdapterNotLoadedError):
            await service.unload_adapter("fake-model")  # a base model is not an adapter

    asyncio.run(main())


def test_a_stream_prepared_before_an_unload_is_refused_before_anything_is_sent() -> None:
    async def main() -> None:
        fake = engine()
        service = TextGeneration([fake])
        await service.load_adapter("sql", "/adapters/sql")
        events = service.stream_chat(request("sql"))  # prepared: the route was resolved
        await service.unload_adapter("sql")  # nothing was running: freed at once
        with pytest.raises(ModelNotServedError):
            await anext(events)  # the first event: the server can still answer 404
        assert fake.requests == []  # the engine never saw it

    asyncio.run(main())


@pytest.fixture
def client(container: Any, fakes: dict[str, Any]) -> Iterator[TestClient[Any]]:
    fakes["engine"].adapter_loading = True
    app = create_app(container, api_keys=[KEY], load_in_background=False)
    with TestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {KEY}"
        yield test_client


def models(client: TestClient[Any]) -> list[tuple[str, Any]]:
    return [(m["id"], m["parent"]) for m in client.get("/v1/models").json()["data"]]


def test_the_routes_take_vllms_bodies_and_answer_its_text(client: TestClient[Any]) -> None:
    loaded = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": "/adapters/sql"}
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.text == "Success: LoRA adapter 'sql' added successfully."
    assert models(client) == [("fake-model", None), ("sql", "fake-model")]
    chat = {"model": "sql", "messages": [{"role": "user", "content": "hi there"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    again = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "sql", "lora_path": "/adapters/x"}
    )
    assert again.status_code == 400
    assert again.json()["error"]["param"] == "lora_name"
    unloaded = client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
    assert unloaded.status_code == 200
    assert unloaded.text == "Success: LoRA adapter 'sql' removed successfully."
    assert models(client) == [("fake-model", None)]
    assert client.post("/v1/chat/completions", json=chat).status_code == 404
    missing = client.post("/v1/unload_lora_adapter", json={"lora_name": "sql"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"lora_name": "x"}, 400, "lora_path"),
        ({"lora_name": "", "lora_path": "/adapters/x"}, 400, "lora_name"),
        ({"lora_name": "x", "lora_path": "/adapters/x", "extra": 1}, 400, "extra"),
        ({"lora_name": "x", "lora_path": "/nowhere"}, 400, "lora_path"),
        ({"lora_name": "x", "lora_path": "/adapters/x", "base_model_name": "gpt"}, 404, "model"),
    ],
)
def test_bad_load_requests_get_openai_errors(
    client: TestClient[Any], body: dict[str, Any], status: int, param: str
) -> None:
    response = client.post("/v1/load_lora_adapter", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_the_routes_are_behind_the_api_keys(client: TestClient[Any]) -> None:
    body = {"lora_name": "x", "lora_path": "/adapters/x"}
    response = client.post(
        "/v1/load_lora_adapter", json=body, headers={"Authorization": "Bearer no"}
    )
    assert response.status_code == 401


def test_without_enable_lora_loading_is_refused(container: Any, fakes: dict[str, Any]) -> None:
    with TestClient(create_app(container, load_in_background=False)) as client:
        body = {"lora_name": "x", "lora_path": "/adapters/x"}
        response = client.post("/v1/load_lora_adapter", json=body)
    assert response.status_code == 400
    assert "--enable-lora" in response.json()["error"]["message"]
