"""A `local:` replica: the OpenAI app of `largeforge serve`, run inside the router's process
and event loop on a private loopback port, reached through the same HTTP client as remote ones
(so streaming, errors and health checks behave exactly alike)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from largeforge.application.experts import ClientFactory
from largeforge.application.ports import ExpertClient
from largeforge.config import ServeSettings, Settings
from largeforge.domain.errors import ReplicaError
from largeforge.domain.routing import ReplicaSpec


class LocalExpertClient:
    """Serves `spec.local` (a model reference) in this process. The server starts on first use
    and loads the model in the background; until it is loaded the replica fails its health
    checks (503), so the router sends its traffic elsewhere. `connect` makes the HTTP client
    for the server's base URL (the router container's `http_client`)."""

    def __init__(self, spec: ReplicaSpec, connect: Callable[[str], ExpertClient]) -> None:
        self._spec = spec
        self._connect = connect
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._client: ExpertClient | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> ExpertClient:
        async with self._lock:
            if self._client is None:
                self._client = await self._start()
            return self._client

    async def _start(self) -> ExpertClient:
        import uvicorn

        from largeforge.container import Container
        from largeforge.entrypoints.http.app import create_app
        from largeforge.entrypoints.http.listen import listen

        assert self._spec.local is not None
        serve = ServeSettings(model=self._spec.local, served_model_name=self._spec.name)
        app = create_app(Container.from_settings(Settings(serve=serve)))
        sock = listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        return self._connect(f"http://127.0.0.1:{port}/v1")

    async def models(self) -> list[str]:
        client = await self._started()
        if self._task is not None and self._task.done():
            raise ReplicaError(f"local replica {self._spec.name} stopped")
        return await client.models()

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await (await self._started()).post(path, body)

    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        async for chunk in (await self._started()).stream(path, body):
            yield chunk

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait([self._task], timeout=10)


def local_clients(connect: Callable[[str], ExpertClient]) -> ClientFactory:
    """The factory of `local:` replicas, reaching each through `connect`."""

    def make(spec: ReplicaSpec) -> ExpertClient:
        return LocalExpertClient(spec, connect)

    return make
