"""The OpenAPI description of the routes: request bodies, response bodies and every status.

The completion routes read their JSON themselves (so a bad body becomes a 400 naming its field),
which leaves Litestar nothing to document; `documented` declares what they take and answer, as
JSON Schema from the pydantic models that validate the requests (`schemas`) and describe the
responses (`openapi_models`). Schemas are inlined: Litestar rebuilds `components.schemas`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from pydantic import BaseModel

from largeforge.entrypoints.http import openapi_models as models

Body = type[BaseModel] | dict[str, Any]

RETRY_AFTER = {"Retry-After": OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER, minimum=1))}

ERRORS: dict[int | str, str] = {
    400: "The request is invalid (the error's `param` names the field).",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`), when keys are configured.",
    403: "The admin API is off (no `admin_keys` in the router config).",
    404: "The model (or expert, replica) is not served; the error's `param` is `model`.",
    413: "The request body is larger than the server's `--max-body-bytes`.",
    429: "The engine's waiting line is full: retry after `Retry-After` seconds.",
    503: "Not ready (loading, shutting down, or no replica can take it): retry after "
    "`Retry-After` seconds.",
    "4XX": "A refusal of the expert the request was routed to, passed through as it came.",
}


def json_schema(body: Body) -> dict[str, Any]:
    """The JSON Schema of a model with its `$defs` inlined (or `body` itself if a dict)."""
    if isinstance(body, dict):
        return body
    schema = body.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


# pydantic leaves the bounds of a validator-wrapped number (`schemas.Int`) in its own words
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _inline(value: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in value.items() if k != "$ref"}
            return _inline(defs[ref.removeprefix("#/$defs/")], defs) | rest
        numeric = value.get("type") in ("integer", "number")
        return {(_BOUNDS.get(k, k) if numeric else k): _inline(v, defs) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, defs) for v in value]
    return value


def _content(media: Mapping[str, Body]) -> dict[str, OpenAPIMediaType]:
    # Litestar serializes a raw dict schema as it is.
    return {m: OpenAPIMediaType(schema=json_schema(b)) for m, b in media.items()}  # type: ignore[arg-type]


def answer(
    description: str,
    body: Body | None = None,
    *,
    media: Mapping[str, Body] | None = None,
    headers: Mapping[str, OpenAPIHeader] | None = None,
) -> OpenAPIResponse:
    """A documented response: a JSON `body`, or one body per media type."""
    content = _content(media if media is not None else {"application/json": body or {}})
    return OpenAPIResponse(description=description, content=content, headers=dict(headers or {}))


def error(status: int | str) -> OpenAPIResponse:
    """A documented error status: the OpenAI error body (and `Retry-After` on 429 and 503)."""
    headers = RETRY_AFTER if status in (429, 503) else None
    return answer(ERRORS[status], models.ErrorResponse, headers=headers)


def documented(
    responses: Mapping[int | str, OpenAPIResponse],
    *,
    errors: tuple[int | str, ...] = (),
    request: Body | None = None,
) -> type[Operation]:
    """An `operation_class` for a route: its request body, responses and error statuses."""
    documented_responses = {str(s): r for s, r in responses.items()}
    documented_responses |= {str(s): error(s) for s in errors}
    request_body = (
        None
        if request is None
        else RequestBody(content=_content({"application/json": request}), required=True)
    )

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            self.responses = dict(documented_responses)
            if request_body is not None:
                self.request_body = request_body

    return DocumentedOperation


def completion(full: type[BaseModel], chunk: type[BaseModel]) -> OpenAPIResponse:
    """The 200 of a completion route: JSON, or with `stream: true` server-sent events."""
    data = {
        "type": "string",
        "anyOf": [
            {"const": "[DONE]", "description": "the last event"},
            {
                "contentMediaType": "application/json",
                "contentSchema": {
                    "anyOf": [json_schema(chunk), json_schema(models.ErrorResponse)],
                },
                "description": "a chunk; a failure after the first chunk is an error event",
            },
        ],
    }
    event = {
        "type": "object",
        "properties": {"data": data},
        "required": ["data"],
        "description": "one server-sent event (`data: ...`); the stream ends with `[DONE]`",
    }
    return answer(
        "The completion: a JSON object, or with `stream: true` server-sent events.",
        media={"application/json": full, "text/event-stream": event},
    )
