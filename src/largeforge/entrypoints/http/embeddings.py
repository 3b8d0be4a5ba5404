"""The OpenAI `/v1/embeddings` body and answer.

`input` is a text, texts, token ids or lists of token ids (of the embedding model's own
vocabulary); `encoding_format: base64` packs each vector as little-endian float32, which the
official client (and LangChain through it) asks for by default.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from largeforge.application.embeddings import (
    MAX_INPUTS,
    Embedded,
    EmbeddingInput,
    EmbeddingRequest,
)
from largeforge.entrypoints.http.schemas import Int, _Body, _FieldError

_TEXT = {"type": "string", "minLength": 1}
_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
_INPUT = {
    "anyOf": [
        _TEXT,
        {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": MAX_INPUTS},
        _TOKEN_IDS,
        {"type": "array", "items": _TOKEN_IDS, "minItems": 1, "maxItems": MAX_INPUTS},
    ],
    "description": "a text, texts, token ids or lists of token ids (of the model's vocabulary); "
    "each at most the model's window",
}


def _integral(value: Any) -> int | None:
    """A JSON integer (2.0 counts, as in JSON Schema; `true` does not), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def _token_ids(value: list[Any], index: int | None) -> tuple[int, ...]:
    where = "input" if index is None else f"input {index}"
    ids = [_integral(v) for v in value]
    if not ids:
        raise _FieldError("input", f"{where}: token ids must not be empty")
    if any(i is None or i < 0 for i in ids):
        raise _FieldError("input", f"{where}: token ids must be integers of at least 0")
    return tuple(i for i in ids if i is not None)


def _inputs(value: Any) -> tuple[EmbeddingInput, ...]:
    """A text, texts, token ids or lists of token ids, as a tuple of inputs; anything else is a
    400 naming `input` (one message for the four shapes, not pydantic's one per shape)."""
    if value == "":
        raise _FieldError("input", "input must not be empty")
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and not isinstance(value[0], str | list):
        return (_token_ids(value, None),)
    elif isinstance(value, list):
        items = value
    else:
        raise _FieldError("input", "input must be a text, texts, token ids or lists of token ids")
    if not items:
        raise _FieldError("input", "input must not be an empty list")
    if len(items) > MAX_INPUTS:
        raise _FieldError("input", f"at most {MAX_INPUTS} inputs per request")
    inputs: list[EmbeddingInput] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise _FieldError("input", f"input {index} is empty")
            inputs.append(item)
        elif isinstance(item, list):
            inputs.append(_token_ids(item, index))
        else:
            raise _FieldError("input", f"input {index}: expected a text or a list of token ids")
    if len({type(i) for i in inputs}) > 1:
        raise _FieldError("input", "input mixes texts and token ids")
    return tuple(inputs)


class EmbeddingBody(_Body):
    """`POST /v1/embeddings`."""

    model: str = Field(min_length=1)
    input: Annotated[tuple[EmbeddingInput, ...], BeforeValidator(_inputs), WithJsonSchema(_INPUT)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Int | None = Field(
        None, ge=1, description="only the model's own number of dimensions"
    )
    user: str | None = None

    def to_domain(self) -> EmbeddingRequest:
        return EmbeddingRequest(self.model, self.input, self.dimensions)


def embedding_list(model: str, embedded: Embedded, encoding_format: str) -> dict[str, Any]:
    """OpenAI's `CreateEmbeddingResponse`."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, encoding_format)}
            for i, v in enumerate(embedded.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens},
    }


def _encoded(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)
