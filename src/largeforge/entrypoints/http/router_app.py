"""The router's Litestar app: the OpenAI API in front of the experts, plus `/router/*`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Litestar, Request, Response, Router, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.response import Stream
from pydantic import ValidationError

from largeforge.application.cascade import CascadeReply, CascadeService
from largeforge.application.router import Chunks, Routed, RouterService
from largeforge.domain.errors import (
    CascadeExhaustedError,
    ConfigError,
    InvalidRequestError,
    NoReplicaAvailableError,
    ReplicaError,
)
from largeforge.domain.routing import RouteDecision
from largeforge.entrypoints.http import router_openapi as doc
from largeforge.entrypoints.http.app import (
    Guard,
    _json,
    _until_disconnect,
    api_key_guards,
    openapi_config,
)
from largeforge.entrypoints.http.errors import EXCEPTION_HANDLERS, describe
from largeforge.entrypoints.http.responses import DONE, sse
from largeforge.entrypoints.http.router_metrics import RouterMetrics
from largeforge.entrypoints.http.schemas import error_body
from largeforge.routing_config import ExpertSettings, RouterSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SessionKeys:
    """Where a request's session key comes from: a header (first) or the `user` field."""

    header: str | None = None
    user_field: bool = False

    def of(self, request: Request[Any, Any, Any], body: dict[str, Any]) -> str | None:
        if self.header:
            value = request.headers.get(self.header)
            if value:
                return value
        user = body.get("user")
        return user if self.user_field and isinstance(user, str) and user else None


@dataclass
class Routing:
    service: RouterService
    metrics: RouterMetrics
    admin_enabled: bool
    cascades: CascadeService | None = None
    sessions: SessionKeys = SessionKeys()


def _routing(state: State) -> Routing:
    routing: Routing = state.routing
    return routing


@get("/health", sync_to_thread=False, operation_class=doc.HEALTH)
def health(state: State) -> Response[dict[str, Any]]:
    """200 while some replica of the default expert is healthy, else 503."""
    ok, healthy = _routing(state).service.health()
    body = {"status": "ok" if ok else "degraded", "healthy_replicas": healthy}
    return Response(body, status_code=200 if ok else 503)


@get("/metrics", sync_to_thread=False, media_type=doc.PROMETHEUS, operation_class=doc.METRICS)
def metrics(state: State) -> bytes:
    return _routing(state).metrics.render()


@get("/models", sync_to_thread=False, operation_class=doc.MODELS)
def list_models(state: State) -> dict[str, Any]:
    """The router's name, each expert (which may be asked for directly), then each cascade."""
    routing = _routing(state)
    names = [*routing.service.models(), *(routing.cascades.cascades if routing.cascades else ())]
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "largeforge-router"}
        for name in names
    ]
    return {"object": "list", "data": data}


@post("/chat/completions", status_code=200, operation_class=doc.CHAT)
async def chat_completions(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Routes by the last user message (or the whole conversation, per the config); a
    cascade's name runs its steps until an answer passes its checks."""
    body = await _body(request)
    routing = _routing(state)
    messages = _messages(body)
    cascade = routing.cascades.cascades.get(body["model"]) if routing.cascades else None
    if cascade is not None:
        return await _cascade(request, routing, cascade, body, messages)
    decision = routing.service.decide(body["model"], messages)
    return await _forward(request, state, "/chat/completions", body, decision)


@post("/completions", status_code=200, operation_class=doc.COMPLETIONS)
async def completions(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Routes by the prompt (a single string; lists and token ids go to the default route)."""
    body = await _body(request)
    routing = _routing(state)
    if routing.cascades is not None and body["model"] in routing.cascades.cascades:
        raise InvalidRequestError(
            f"'{body['model']}' is a cascade: cascades answer chat completions only",
            param="model",
        )
    prompt = body.get("prompt")
    text = prompt if isinstance(prompt, str) else ""
    decision = _routing(state).service.decide(body["model"], [("user", text)])
    return await _forward(request, state, "/completions", body, decision)


@get("/experts", sync_to_thread=False, operation_class=doc.EXPERTS)
def experts(state: State) -> dict[str, Any]:
    """Experts, replicas, breaker states, outstanding requests and latency."""
    return _routing(state).service.describe()


@post("/experts", status_code=201, operation_class=doc.ADD_EXPERT)
async def add_expert(request: Request[Any, Any, Any], state: State) -> Any:
    """Admin: route to a new expert (the router file's expert entry, e.g. with a replica whose
    `model` is a LoRA adapter a server loaded at run time)."""
    routing = _admin(state)
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("expected a JSON object describing the expert")
    try:
        expert = RouterSettings.expert(ExpertSettings.model_validate(body))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidRequestError(f"{where}: {error['msg']}", param=where or None) from None
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    if expert.name in routing.service.models() or (
        routing.cascades is not None and expert.name in routing.cascades.cascades
    ):
        raise InvalidRequestError(f"the name '{expert.name}' is taken", param="name")
    try:
        return await routing.service.add_expert(expert)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None


@delete("/experts/{expert:str}", status_code=200, operation_class=doc.REMOVE_EXPERT)
async def remove_expert(expert: str, state: State) -> dict[str, Any]:
    """Admin: stop routing to an expert; its requests in flight finish first."""
    routing = _admin(state)
    if expert not in routing.service.manager.experts:
        raise HTTPException(status_code=404, detail=f"no expert '{expert}'")
    cascades = routing.cascades.cascades.values() if routing.cascades else ()
    users = [c.name for c in cascades if c.uses(expert)]
    if users:
        raise InvalidRequestError(f"expert '{expert}' is a step of cascade {', '.join(users)}")
    try:
        await routing.service.remove_expert(expert)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    return {"removed": expert}


@post("/experts/{expert:str}/replicas", status_code=201, operation_class=doc.ADD_REPLICA)
async def add_replica(expert: str, request: Request[Any, Any, Any], state: State) -> Any:
    """Admin: add a replica (`{"url": ..., "name"?, "model"?, "weight"?, "api_key"?}`)."""
    routing = _admin(state)
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("expected a JSON object describing the replica")
    return routing.service.add_replica(expert, body)


@delete(
    "/experts/{expert:str}/replicas/{name:str}", status_code=200, operation_class=doc.REMOVE_REPLICA
)
async def remove_replica(expert: str, name: str, state: State) -> dict[str, Any]:
    """Admin: drain a replica, wait for its requests in flight, then remove it."""
    service = _admin(state).service
    with _not_found():
        await service.remove_replica(expert, name)
    return {"removed": name, "expert": expert}


@post(
    "/experts/{expert:str}/replicas/{name:str}/drain",
    status_code=200,
    operation_class=doc.REPLICA_STATE,
)
async def drain_replica(expert: str, name: str, state: State) -> dict[str, Any]:
    """Admin: stop sending new requests to a replica."""
    service = _admin(state).service
    with _not_found():
        return service.drain(expert, name)


@post(
    "/experts/{expert:str}/replicas/{name:str}/resume",
    status_code=200,
    operation_class=doc.REPLICA_STATE,
)
async def resume_replica(expert: str, name: str, state: State) -> dict[str, Any]:
    """Admin: send requests to a drained replica again."""
    service = _admin(state).service
    with _not_found():
        return service.drain(expert, name, draining=False)


@contextmanager
def _not_found() -> Iterator[None]:
    """An unknown expert or replica (`ConfigError` from the use case) is a 404."""
    try:
        yield
    except ConfigError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


def _admin(state: State) -> Routing:
    routing = _routing(state)
    if not routing.admin_enabled:
        raise PermissionDeniedException(
            detail="the admin API is off: set admin_keys in the router config"
        )
    return routing


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise InvalidRequestError("'model' is required and must be a string", param="model")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    return body


def _messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list", param="messages")
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequestError("each message needs a 'role'", param=f"messages.{i}")
        # an assistant turn with tool_calls may have no content; only user turns are classified
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        result.append((message["role"], content if isinstance(content, str) else ""))
    return result


def _headers(routed: Routed) -> dict[str, str]:
    decision = routed.decision
    scores = ";".join(f"{name}={score:.4f}" for name, score in decision.ranked())
    headers = {
        "x-largeforge-expert": routed.expert,
        "x-largeforge-replica": routed.replica,
        "x-largeforge-route-stage": decision.stage.value,
        "x-largeforge-route-scores": scores,
        "x-largeforge-attempts": str(routed.attempts),
    }
    if routed.moved_from is not None:
        headers["x-largeforge-session-moved"] = f"{routed.moved_from}->{routed.replica}"
    return headers


def _cascade_headers(reply: CascadeReply) -> dict[str, str]:
    trace = reply.trace
    return {
        **_headers(reply.routed),
        "x-largeforge-cascade": trace.cascade,
        "x-largeforge-cascade-step": str(reply.step),
        "x-largeforge-cascade-reason": _latin1(" | ".join(o.describe() for o in trace.outcomes)),
        "x-largeforge-cascade-cost": f"{trace.cost:.6f}",
    }


def _latin1(text: str, limit: int = 1000) -> str:
    """A header value: printable ASCII, one line, at most `limit` characters."""
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean[:limit]


async def _cascade(
    request: Request[Any, Any, Any],
    routing: Routing,
    cascade: Any,
    body: dict[str, Any],
    messages: list[tuple[str, str]],
) -> Response[Any]:
    assert routing.cascades is not None
    session = routing.sessions.of(request, body)
    timer = routing.metrics.timer(cascade.steps[0].target)
    try:
        reply = await _until_disconnect(
            request, routing.cascades.run(cascade, body, messages, session)
        )
    except ReplicaError as exc:  # the request itself was refused: pass it on
        timer.failed()
        if exc.body is not None and exc.status is not None:
            return Response(exc.body, status_code=exc.status)
        raise
    except CascadeExhaustedError as exc:
        timer.failed()
        routing.metrics.exhausted(exc.cascade)
        raise
    timer.routed(reply.routed)
    timer.done()  # the cost is counted per step by `cascaded`
    routing.metrics.cascaded(reply.trace)
    headers = _cascade_headers(reply)
    if reply.chunks is not None:
        return Stream(
            _replay(reply.chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **headers},
        )
    return Response(reply.payload, headers=headers)


async def _replay(chunks: tuple[dict[str, Any], ...]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield sse(chunk)
    yield DONE


async def _forward(
    request: Request[Any, Any, Any],
    state: State,
    path: str,
    body: dict[str, Any],
    decision: RouteDecision,
) -> Response[Any]:
    routing = _routing(state)
    routing.metrics.decided(decision)
    timer = routing.metrics.timer(decision.expert)
    session = routing.sessions.of(request, body)
    try:
        if body.get("stream"):
            routed, chunks = await routing.service.stream(path, body, decision, session)
            timer.routed(routed)
            return Stream(
                _sse(chunks, timer),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", **_headers(routed)},
            )
        routed, payload = await _until_disconnect(
            request, routing.service.post(path, body, decision, session)
        )
    except ReplicaError as exc:  # the expert refused the request itself: pass it on
        timer.failed()
        if exc.body is not None and exc.status is not None:
            return Response(exc.body, status_code=exc.status)
        raise
    except NoReplicaAvailableError:
        timer.failed()
        raise
    timer.routed(routed)
    timer.done(
        routing.cascades.cost(routed.expert, payload.get("usage")) if routing.cascades else 0.0
    )
    return Response(payload, headers=_headers(routed))


async def _sse(chunks: Chunks, timer: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield sse(chunk)
        timer.done()
    except Exception as exc:
        timer.failed()
        status, payload, _headers = describe(exc)
        if isinstance(exc, ReplicaError):
            payload = error_body(
                f"the expert failed mid-stream: {exc}", "server_error", None, "expert_failed"
            )
        log.error("routed_stream_failed", status=status, error=str(exc))
        yield sse(payload)
    finally:
        await chunks.aclose()
    yield DONE


def _by_method(reads: Sequence[Guard], changes: Sequence[Guard]) -> Guard:
    """One guard for a path with both: GET and HEAD pass `reads`, other methods `changes`."""

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        method = connection.scope.get("method", "GET")
        for check in reads if method in ("GET", "HEAD") else changes:
            await check(connection, handler)

    return guard


def create_router_app(
    service: RouterService,
    *,
    api_keys: Sequence[str] = (),
    admin_keys: Sequence[str] = (),
    health_interval_s: float = 5.0,
    max_body_bytes: int = 4 * 1024 * 1024,
    cascades: CascadeService | None = None,
    sessions: SessionKeys = SessionKeys(),
) -> Litestar:
    """The router app: checks replica health once before serving, then every interval.
    `cascades` serves the cascades' names as models; `sessions` says where session keys come
    from (the service's pins decide whether they pin anything)."""
    routing = Routing(
        service, RouterMetrics(service), bool(admin_keys), cascades=cascades, sessions=sessions
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await service.check_health()
        task = asyncio.create_task(service.run_health_checks(health_interval_s))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await service.aclose()

    v1 = Router(
        path="/v1",
        route_handlers=[list_models, chat_completions, completions],
        guards=api_key_guards(api_keys),
    )
    admin = Router(  # reads (GET) take the client keys, changes the admin keys
        path="/router",
        route_handlers=[
            experts,
            add_expert,
            remove_expert,
            add_replica,
            remove_replica,
            drain_replica,
            resume_replica,
        ],
        guards=[_by_method(api_key_guards(api_keys), api_key_guards(admin_keys))],
    )
    return Litestar(
        route_handlers=[health, metrics, v1, admin],
        openapi_config=openapi_config("LargeForge router", "The OpenAI API in front of experts."),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        state=State({"routing": routing}),
        request_max_body_size=max_body_bytes,
        logging_config=None,  # structlog (entrypoints/logs.py) logs; Litestar's default spams INFO
        debug=False,
    )
