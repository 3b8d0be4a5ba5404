"""HttpExpertClient against a scripted aiohttp server: statuses, Retry-After, streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from largeforge.adapters.http.expert_client import HttpExpertClient
from largeforge.domain.errors import ReplicaError


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "m1"}, {"id": "m2"}]})


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    mode = body["messages"][0]["content"]
    if mode == "busy":
        error = {"error": {"message": "queue full", "type": "rate_limit_error"}}
        return web.json_response(error, status=429, headers={"Retry-After": "7"})
    if mode == "bad":
        return web.json_response({"error": {"message": "bad temperature"}}, status=400)
    if mode == "garbage":
        return web.Response(text="<html>oops</html>", status=502)
    if not body.get("stream"):
        return web.json_response({"model": body["model"], "choices": []})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i in range(3):
        await response.write(f"data: {json.dumps({'i': i})}\n\n".encode())
        if mode == "error-after-1" and i == 0:
            await response.write(b'data: {"error": {"message": "engine died"}}\n\n')
    if mode != "no-done":
        await response.write(b"data: [DONE]\n\n")
    return response


def run(scenario: Callable[[HttpExpertClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        server = TestServer(app)
        await server.start_server()
        client = HttpExpertClient(f"http://127.0.0.1:{server.port}/v1", api_key="k")
        try:
            return await scenario(client)
        finally:
            await client.aclose()
            await server.close()

    return asyncio.run(main())


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m1", "messages": [{"role": "user", "content": content}], **extra}


async def collect(client: HttpExpertClient, content: str) -> list[dict[str, Any]]:
    return [c async for c in client.stream("/chat/completions", body(content, stream=True))]


def test_models_and_a_plain_post() -> None:
    async def scenario(client: HttpExpertClient) -> None:
        assert await client.models() == ["m1", "m2"]
        assert (await client.post("/chat/completions", body("hi")))["model"] == "m1"

    run(scenario)


def test_http_errors_keep_status_body_and_retry_after() -> None:
    async def scenario(client: HttpExpertClient) -> None:
        with pytest.raises(ReplicaError) as busy:
            await client.post("/chat/completions", body("busy"))
        assert busy.value.status == 429
        assert busy.value.retry_after == 7
        assert not busy.value.is_client_error  # another replica may take it
        with pytest.raises(ReplicaError) as bad:
            await client.post("/chat/completions", body("bad"))
        assert bad.value.is_client_error
        assert bad.value.body == {"error": {"message": "bad temperature"}}
        with pytest.raises(ReplicaError, match="502: <html>oops") as garbage:
            await client.post("/chat/completions", body("garbage"))
        assert garbage.value.body is None

    run(scenario)


def test_streams_end_at_done_and_fail_on_error_events_or_a_missing_done() -> None:
    async def scenario(client: HttpExpertClient) -> None:
        assert [c["i"] for c in await collect(client, "ok")] == [0, 1, 2]
        with pytest.raises(ReplicaError, match="engine died"):
            await collect(client, "error-after-1")
        with pytest.raises(ReplicaError, match="without \\[DONE\\]"):
            await collect(client, "no-done")
        with pytest.raises(ReplicaError) as busy:
            await collect(client, "busy")
        assert busy.value.status == 429

    run(scenario)


def test_an_unreachable_replica_has_no_status() -> None:
    async def scenario() -> None:
        client = HttpExpertClient("http://127.0.0.1:9/v1", connect_timeout_s=1)
        try:
            with pytest.raises(ReplicaError, match="did not answer") as info:
                await client.models()
            assert info.value.status is None
        finally:
            await client.aclose()

    asyncio.run(scenario())
