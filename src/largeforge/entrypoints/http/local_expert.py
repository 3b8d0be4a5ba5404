"""A `local:` replica: the OpenAI app of `largeforge serve`, run in-process behind the router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from contextlib import AsyncExitStack
from typing import Any

import httpx

from largeforge.adapters.http.expert_client import HttpExpertClient
from largeforge.config import ServeSettings, Settings
from largeforge.domain.routing import ReplicaSpec


class LocalExpertClient:
    """Serves `spec.local` (a model reference) in this process through the same HTTP app as
    `largeforge serve`, called over an in-memory ASGI transport. The model loads in the
    background on first use; until then the replica fails its health checks."""

    def __init__(self, spec: ReplicaSpec) -> None:
        from largeforge.container import Container
        from largeforge.entrypoints.http.app import create_app

        assert spec.local is not None
        settings = Settings(serve=ServeSettings(model=spec.local, served_model_name=spec.name))
        self._app = create_app(Container.from_settings(settings))
        self._http = HttpExpertClient(
            "http://local/v1",
            transport=httpx.ASGITransport(app=self._app),  # type: ignore[arg-type]
        )
        self._stack = AsyncExitStack()
        self._started = False
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if not self._started:
                await self._stack.enter_async_context(self._app.lifespan())
                self._started = True

    async def models(self) -> list[str]:
        await self._start()
        return await self._http.models()

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await self._start()
        return await self._http.post(path, body)

    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        await self._start()
        async for chunk in self._http.stream(path, body):
            yield chunk

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._stack.aclose()


def local_client(spec: ReplicaSpec) -> LocalExpertClient:
    return LocalExpertClient(spec)
