"""The Litestar app factory: OpenAI-compatible routes over the chat use case."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, SerializationException
from litestar.handlers.base import BaseRouteHandler

from largeforge.application.chat import ChatCompletion
from largeforge.domain.errors import InvalidRequestError
from largeforge.entrypoints.http.errors import EXCEPTION_HANDLERS, ServiceLoadingError
from largeforge.entrypoints.http.schemas import chat_completion_response, parse_chat_request

log = structlog.get_logger(__name__)


@dataclass
class Serving:
    """What the routes serve: filled in by the lifespan once the engines are loaded."""

    chat: ChatCompletion | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)

    def ready_chat(self) -> ChatCompletion:
        if self.chat is None:
            reason = f"model failed to load: {self.error}" if self.error else "model is loading"
            raise ServiceLoadingError(detail=reason, headers={"Retry-After": "5"})
        return self.chat


def _serving(state: State) -> Serving:
    serving: Serving = state.serving
    return serving


def api_key_guard(
    keys: Sequence[str],
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A guard accepting `Authorization: Bearer <key>` for any of `keys` (constant-time)."""
    encoded = [k.encode() for k in keys]

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not encoded:
            return
        header = connection.headers.get("authorization", "")
        scheme, _sep, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key so timing does not reveal which one nearly matched.
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise NotAuthorizedException(
                detail="Missing API key" if not given else "Incorrect API key provided"
            )

    return guard


@get("/health", sync_to_thread=False)
def health(state: State) -> Response[dict[str, Any]]:
    """200 when the model is loaded, 503 while loading or after a load failure."""
    serving = _serving(state)
    if serving.chat is not None:
        return Response({"status": "ok", "models": list(serving.chat.models())})
    status = "error" if serving.error else "loading"
    body: dict[str, Any] = {"status": status}
    if serving.error:
        body["error"] = serving.error
    return Response(body, status_code=503, headers={"Retry-After": "5"})


@get("/models", sync_to_thread=False)
def list_models(state: State) -> dict[str, Any]:
    """The served model ids, in the OpenAI list shape."""
    serving = _serving(state)
    chat = serving.ready_chat()
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": int(serving.started_at),
                "owned_by": "largeforge",
            }
            for name in chat.models()
        ],
    }


@post("/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Chat completion (non-streaming)."""
    chat = _serving(state).ready_chat()
    try:
        data = await request.json()
    except SerializationException as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    body = parse_chat_request(data)
    domain_request = body.to_domain()
    started = time.perf_counter()
    completion = await chat.execute(domain_request)
    log.info(
        "chat_completion",
        model=body.model,
        prompt_tokens=completion.usage.prompt_tokens,
        completion_tokens=completion.usage.completion_tokens,
        finish_reason=completion.finish_reason.value,
        seconds=round(time.perf_counter() - started, 3),
    )
    return chat_completion_response(body.model, completion)


def create_app(
    container: Any,
    *,
    api_keys: Sequence[str] = (),
    load_in_background: bool = True,
) -> Litestar:
    """Build the app. The container's `chat` provider is resolved in the lifespan.

    With `load_in_background` the server answers `/health` with 503 while the model loads.
    """
    serving = Serving()

    def load() -> None:
        try:
            serving.chat = container.chat()
            log.info("server_ready", models=list(serving.chat.models()))
        except Exception as exc:  # reported by /health and every request
            serving.error = f"{type(exc).__name__}: {exc}"
            log.error("model_load_failed", error=serving.error)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        task = None
        if load_in_background:
            task = asyncio.create_task(asyncio.to_thread(load))
        else:
            load()
        try:
            yield
        finally:
            if task is not None and not task.done():
                await asyncio.wait([task], timeout=1)
            if serving.chat is not None:
                serving.chat.close()

    v1 = Router(
        path="/v1",
        route_handlers=[list_models, chat_completions],
        guards=[api_key_guard(api_keys)],
    )
    return Litestar(
        route_handlers=[health, v1],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({"serving": serving}),
        request_max_body_size=4 * 1024 * 1024,
        debug=False,
    )
