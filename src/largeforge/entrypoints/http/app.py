"""The Litestar app factory: OpenAI-compatible routes over the `TextGeneration` use case."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, SerializationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Stream
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from largeforge.application.embeddings import EmbedTexts
from largeforge.application.ports import EngineLoad
from largeforge.application.serving import StreamEvent, TextGeneration
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.generation import Completion, Usage
from largeforge.entrypoints.http import openapi_models as models
from largeforge.entrypoints.http.embeddings import EmbeddingBody, embedding_list
from largeforge.entrypoints.http.errors import (
    EXCEPTION_HANDLERS,
    ClientDisconnectedError,
    ServiceLoadingError,
    describe,
)
from largeforge.entrypoints.http.lora_adapters import load_lora_adapter, unload_lora_adapter
from largeforge.entrypoints.http.metrics import ServerMetrics
from largeforge.entrypoints.http.openapi import RETRY_AFTER, answer, completion, documented
from largeforge.entrypoints.http.responses import (
    DONE,
    ChunkWriter,
    chat_completion,
    combined_usage,
    new_id,
    sse,
    text_completion,
)
from largeforge.entrypoints.http.schemas import ChatCompletionBody, CompletionBody, parse_body
from largeforge.entrypoints.http.tokens import (
    TOKENIZE_REQUEST,
    DetokenizeBody,
    TokenizeChatBody,
    parse_tokenize,
    tokenize_answer,
)
from largeforge.version import __version__

log = structlog.get_logger(__name__)
T = TypeVar("T")

COMPLETION_ERRORS = (400, 401, 404, 413, 429, 503)
UTILITY_ERRORS = (400, 401, 404, 413, 503)
PROMETHEUS = "text/plain; version=0.0.4"
METRICS_DOC = documented(
    {200: answer("Prometheus text exposition.", media={PROMETHEUS: {"type": "string"}})}
)

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class Serving:
    """What the routes serve: filled in by the lifespan once the engines are loaded."""

    service: TextGeneration | None = None
    error: str | None = None
    embeddings: EmbedTexts | None = None  # loaded before `service`, so ready with it
    started_at: float = field(default_factory=time.time)
    metrics: ServerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.load)

    def load(self) -> EngineLoad | None:
        return self.service.load() if self.service is not None else None

    def ready(self) -> TextGeneration:
        if self.service is None:
            reason = f"model failed to load: {self.error}" if self.error else "model is loading"
            raise ServiceLoadingError(detail=reason, headers={"Retry-After": "5"})
        return self.service


def _serving(state: State) -> Serving:
    serving: Serving = state.serving
    return serving


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def api_key_guards(keys: Sequence[str]) -> list[Guard]:
    """Guards accepting `Authorization: Bearer <key>` for any of `keys` (none when no keys).

    The guard is async: Litestar runs a sync guard in a worker thread, which cost about a
    millisecond per request here.
    """
    encoded = [k.encode() for k in keys]
    if not encoded:
        return []

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
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

    return [guard]


@get(
    "/health",
    sync_to_thread=False,
    operation_class=documented(
        {
            200: answer("The model is loaded.", models.Health),
            503: answer(
                "The model is loading or failed to load.", models.Health, headers=RETRY_AFTER
            ),
        }
    ),
)
def health(state: State) -> Response[dict[str, Any]]:
    """200 when the model is loaded, 503 while loading or after a load failure."""
    serving = _serving(state)
    if serving.service is not None:
        return Response({"status": "ok", "models": list(serving.service.models())})
    status = "error" if serving.error else "loading"
    body: dict[str, Any] = {"status": status}
    if serving.error:
        body["error"] = serving.error
    return Response(body, status_code=503, headers={"Retry-After": "5"})


@get("/metrics", sync_to_thread=False, media_type=PROMETHEUS, operation_class=METRICS_DOC)
def metrics(state: State) -> bytes:
    """Prometheus text exposition."""
    return _serving(state).metrics.render()


@get(
    "/models",
    sync_to_thread=False,
    operation_class=documented(
        {200: answer("The served models.", models.ModelList)}, errors=(401, 503)
    ),
)
def list_models(state: State) -> dict[str, Any]:
    """The served model ids (base models, then LoRA adapters), in the OpenAI list shape."""
    serving = _serving(state)
    service = serving.ready()
    data = []
    for name in service.models():
        base = service.base_of(name)
        entry = {"id": name, "object": "model", "created": int(serving.started_at)}
        data.append(entry | {"owned_by": "largeforge", "root": base or name, "parent": base})
    for name in serving.embeddings.models() if serving.embeddings is not None else ():
        entry = {"id": name, "object": "model", "created": int(serving.started_at)}
        data.append(entry | {"owned_by": "largeforge", "root": name, "parent": None})
    return {"object": "list", "data": data}


@post(
    "/chat/completions",
    status_code=200,
    operation_class=documented(
        {200: completion(models.ChatCompletion, models.ChatCompletionChunk)},
        errors=COMPLETION_ERRORS,
        request=ChatCompletionBody,
    ),
)
async def chat_completions(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Chat completion, streamed (SSE) or not."""
    serving = _serving(state)
    service = serving.ready()
    body: ChatCompletionBody = parse_body(ChatCompletionBody, await _json(request))
    domain = body.to_domain()
    timer = _Timer(serving.metrics, body.model)
    if body.stream:
        events = service.stream_chat(domain, on_first_token=timer.first_token)
        writer = ChunkWriter(
            body.model, chat=True, include_usage=body.include_usage, logprobs=body.logprobs
        )
        return await _stream(events, writer, timer, opening=writer.role(body.n))
    completion = await _until_disconnect(
        request, service.chat(domain, on_first_token=timer.first_token)
    )
    timer.finished(completion.usage)
    return Response(chat_completion(new_id("chatcmpl"), body.model, completion))


@post(
    "/completions",
    status_code=200,
    operation_class=documented(
        {200: completion(models.TextCompletion, models.TextCompletionChunk)},
        errors=COMPLETION_ERRORS,
        request=CompletionBody,
    ),
)
async def completions(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Text completion of one or several prompts (text or token ids), streamed or not."""
    serving = _serving(state)
    service = serving.ready()
    body: CompletionBody = parse_body(CompletionBody, await _json(request))
    requests = body.to_domain()
    timer = _Timer(serving.metrics, body.model)
    if body.stream:
        if len(requests) > 1:
            raise InvalidRequestError("stream=true takes a single prompt", param="prompt")
        events = service.stream_complete(requests[0], on_first_token=timer.first_token)
        writer = ChunkWriter(
            body.model,
            chat=False,
            include_usage=body.include_usage,
            logprobs=body.logprobs is not None,
        )
        return await _stream(events, writer, timer)
    results: list[Completion] = await _until_disconnect(
        request,
        asyncio.gather(*(service.complete(r, on_first_token=timer.first_token) for r in requests)),
    )
    timer.finished(combined_usage(results))
    return Response(text_completion(new_id("cmpl"), body.model, results))


@post(
    "/embeddings",
    status_code=200,
    operation_class=documented(
        {200: answer("One embedding per input, in order.", models.EmbeddingList)},
        errors=UTILITY_ERRORS,
        request=EmbeddingBody,
    ),
)
async def embeddings(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """Embeddings of texts or token ids with the embedding model (`serve --embedding-model`)."""
    serving = _serving(state)
    serving.ready()
    body: EmbeddingBody = parse_body(EmbeddingBody, await _json(request))
    service = serving.embeddings or EmbedTexts({})
    timer = _Timer(serving.metrics, body.model)
    embedded = await service.embed(body.to_domain())
    timer.finished(Usage(embedded.prompt_tokens, 0))
    return embedding_list(body.model, embedded, body.encoding_format)


@post(
    "/tokenize",
    status_code=200,
    operation_class=documented(
        {200: answer("The token ids (vLLM's shape).", models.TokenizeResponse)},
        errors=UTILITY_ERRORS,
        request=TOKENIZE_REQUEST,
    ),
)
async def tokenize(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """A prompt's token ids, or a conversation's as a chat completion's prompt (vLLM's route)."""
    service = _serving(state).ready()
    body = parse_tokenize(await _json(request))
    model = body.model or service.models()[0]
    strings = bool(body.return_token_strs)
    if isinstance(body, TokenizeChatBody):
        tokenized = service.render(model, body.conversation(), body.tool_specs(), strings=strings)
    else:
        tokenized = service.tokenize(
            model, body.prompt, add_special_tokens=body.add_special_tokens, strings=strings
        )
    return tokenize_answer(tokenized)


@post(
    "/detokenize",
    status_code=200,
    operation_class=documented(
        {200: answer("The text of the ids (vLLM's shape).", models.DetokenizeResponse)},
        errors=UTILITY_ERRORS,
        request=DetokenizeBody,
    ),
)
async def detokenize(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """The text of token ids, special tokens included (vLLM's route)."""
    service = _serving(state).ready()
    body: DetokenizeBody = parse_body(DetokenizeBody, await _json(request))
    return {"prompt": service.detokenize(body.model or service.models()[0], body.tokens)}


async def _json(request: Request[Any, Any, Any]) -> Any:
    try:
        return await request.json()
    except SerializationException as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's decoder refuses deep nesting this way
        raise InvalidRequestError("request body is nested too deeply") from None


class _Timer:
    """Per-request metrics: time to first token, latency and token counters."""

    def __init__(self, metrics: ServerMetrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._start = time.perf_counter()

    def first_token(self) -> None:
        elapsed = time.perf_counter() - self._start
        self._metrics.time_to_first_token.labels(self._model).observe(elapsed)

    def finished(self, usage: Usage) -> None:
        elapsed = time.perf_counter() - self._start
        self._metrics.latency.labels(self._model).observe(elapsed)
        self._metrics.prompt_tokens.labels(self._model).inc(usage.prompt_tokens)
        self._metrics.generation_tokens.labels(self._model).inc(usage.completion_tokens)
        log.info(
            "request_served",
            model=self._model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            seconds=round(elapsed, 3),
        )


async def _stream(
    events: AsyncGenerator[StreamEvent, None],
    writer: ChunkWriter,
    timer: _Timer,
    opening: bytes = b"",
) -> Stream:
    """An SSE response. The first event is awaited here, so an overloaded engine or a bad
    request still gets a proper status code; later failures become an error event."""
    first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        try:
            if opening:
                yield opening
            event: StreamEvent | None = first
            while event is not None:
                if isinstance(event, Usage):
                    timer.finished(event)
                    if writer.include_usage:
                        yield writer.usage(event)
                else:
                    yield writer.delta(event)
                event = await anext(events, None)
        except Exception as exc:
            status, payload, _headers = describe(exc)
            log.error("stream_failed", status=status, error=str(exc))
            yield sse(payload)
        finally:
            await events.aclose()  # frees the engine's slots when the client went away
        yield DONE

    return Stream(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _until_disconnect(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and freeing its engine slots) if the client disconnects."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientDisconnectedError()


def request_metrics(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting finished requests by route and status code."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            serving: Serving = scope["app"].state.serving
            endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
            serving.metrics.requests.labels(endpoint, str(status["code"])).inc()

    return middleware


_ENDPOINTS = frozenset(
    {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"}
    | {"/v1/embeddings", "/tokenize", "/detokenize"}
)


def openapi_config(title: str, description: str) -> OpenAPIConfig:
    """The OpenAPI document at `/schema/openapi.json` (API keys as bearer tokens)."""
    bearer = SecurityScheme(type="http", scheme="bearer", description="an API key")
    return OpenAPIConfig(
        title=title,
        version=__version__,
        description=description,
        components=Components(security_schemes={"bearer": bearer}),
    )


def create_app(
    container: Any,
    *,
    api_keys: Sequence[str] = (),
    load_in_background: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Litestar:
    """Build the app. The container's `generation` provider is resolved in the lifespan.

    With `load_in_background` the server answers `/health` with 503 while the model loads.
    """
    serving = Serving()

    def load() -> None:
        try:
            serving.embeddings = container.embeddings()
            serving.service = container.generation()
            log.info("server_ready", models=list(serving.service.models()))
            for model, tools in serving.service.tool_calling().items():
                log.info("tool_calling", model=model, **tools)
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
            if serving.service is not None:
                serving.service.close()

    v1 = Router(
        path="/v1",
        route_handlers=[
            list_models,
            chat_completions,
            completions,
            embeddings,
            load_lora_adapter,
            unload_lora_adapter,
        ],
        guards=api_key_guards(api_keys),
        security=[{"bearer": []}] if api_keys else None,
    )
    tokens = Router(  # vLLM's paths: outside /v1, behind the same keys
        path="/",
        route_handlers=[tokenize, detokenize],
        guards=api_key_guards(api_keys),
        security=[{"bearer": []}] if api_keys else None,
    )
    return Litestar(
        route_handlers=[health, metrics, v1, tokens],
        openapi_config=openapi_config("LargeForge serve", "The OpenAI-compatible API."),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        middleware=[request_metrics],
        state=State({"serving": serving}),
        request_max_body_size=max_body_bytes,
        logging_config=None,  # structlog (entrypoints/logs.py) logs; Litestar's default spams INFO
        debug=False,
    )
