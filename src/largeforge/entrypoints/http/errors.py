"""One exception-handler map: every error leaves as an OpenAI-style error body."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from largeforge.domain.errors import (
    AdapterNotLoadedError,
    CascadeExhaustedError,
    ContextLengthExceededError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    LargeForgeError,
    ModelNotServedError,
    NoReplicaAvailableError,
)
from largeforge.entrypoints.http.schemas import error_body

log = structlog.get_logger(__name__)


class ServiceLoadingError(HTTPException):
    """The model is still loading (503 with Retry-After)."""

    status_code = 503


class ClientDisconnectedError(HTTPException):
    """The client went away before the response was ready (nobody reads this response)."""

    status_code = 499
    detail = "client closed the request"


_HTTP_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("invalid_request_error", "client_closed_request"),
    503: ("service_unavailable", "service_unavailable"),
}

Described = tuple[int, dict[str, Any], dict[str, str]]


def describe(exc: BaseException) -> Described:
    """Status code, OpenAI error body and headers for any exception."""
    if isinstance(exc, HTTPException):
        status = exc.status_code
        type_, code = _HTTP_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        headers = dict(exc.headers or {})
        if status == 503:
            headers.setdefault("Retry-After", "5")
        return status, error_body(str(exc.detail), type_, None, code), headers
    if isinstance(exc, InvalidRequestError):
        code = "context_length_exceeded" if isinstance(exc, ContextLengthExceededError) else None
        return 400, error_body(str(exc), "invalid_request_error", exc.param, code), {}
    if isinstance(exc, ModelNotServedError):
        body = error_body(str(exc), "invalid_request_error", "model", "model_not_found")
        return 404, body, {}
    if isinstance(exc, EngineOverloadedError):
        body = error_body(str(exc), "rate_limit_error", None, "queue_full")
        return 429, body, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, EngineUnavailableError):
        body = error_body(str(exc), "service_unavailable", None, "engine_unavailable")
        return 503, body, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, NoReplicaAvailableError):
        body = error_body(str(exc), "service_unavailable", None, "no_replica_available")
        return 503, body, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, AdapterNotLoadedError):
        return 404, error_body(str(exc), "invalid_request_error", "lora_name", "not_found"), {}
    if isinstance(exc, CascadeExhaustedError):  # the experts failed: retrying would too
        body = error_body(str(exc), "server_error", None, "cascade_exhausted")
        return 502, body, {"x-should-retry": "false"}
    if isinstance(exc, LargeForgeError):
        return 500, error_body(str(exc), "server_error"), {}
    return 500, error_body(f"internal server error ({type(exc).__name__})", "server_error"), {}


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, body, headers = describe(exc)
    if status >= 500:
        log.error("request_failed", path=request.url.path, error=repr(exc), exc_info=exc)
    return Response(content=body, status_code=status, headers=headers)


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {Exception: handle}
