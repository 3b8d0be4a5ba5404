"""One exception-handler map: every error leaves as an OpenAI-style error body."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from largeforge.domain.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    LargeForgeError,
    ModelNotServedError,
)
from largeforge.entrypoints.http.schemas import error_body

log = structlog.get_logger(__name__)


class ServiceLoadingError(HTTPException):
    """The model is still loading (503 with Retry-After)."""

    status_code = 503


_HTTP_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("service_unavailable", "service_unavailable"),
}


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(content=body, status_code=status, headers=headers or {})


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    type_, code = _HTTP_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    headers = dict(exc.headers or {})
    if status == 503:
        headers.setdefault("Retry-After", "5")
    return _json(status, error_body(str(exc.detail), type_, None, code), headers)


def handle_invalid_request(
    request: Request[Any, Any, Any], exc: InvalidRequestError
) -> Response[Any]:
    code = "context_length_exceeded" if isinstance(exc, ContextLengthExceededError) else None
    return _json(400, error_body(str(exc), "invalid_request_error", exc.param, code))


def handle_model_not_served(
    request: Request[Any, Any, Any], exc: ModelNotServedError
) -> Response[Any]:
    return _json(404, error_body(str(exc), "invalid_request_error", "model", "model_not_found"))


def handle_largeforge_error(request: Request[Any, Any, Any], exc: LargeForgeError) -> Response[Any]:
    log.error("request_failed", path=request.url.path, error=str(exc))
    return _json(500, error_body(str(exc), "server_error"))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled_error", path=request.url.path)
    return _json(
        HTTP_500_INTERNAL_SERVER_ERROR,
        error_body(f"internal server error ({type(exc).__name__})", "server_error"),
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: handle_http_exception,
    InvalidRequestError: handle_invalid_request,
    ModelNotServedError: handle_model_not_served,
    LargeForgeError: handle_largeforge_error,
    Exception: handle_unexpected,
}
