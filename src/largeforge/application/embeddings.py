"""The embeddings use case: sentence vectors for the OpenAI `/v1/embeddings` route, by model id.

Texts are tokenized by the model's own tokenizer (its special tokens included, as the encoder
expects them); token-id inputs are taken as they are. Every input must fit the encoder's
window: an input is never cut, since a truncated input would silently embed a different text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from largeforge.application.ports import EmbeddingModel
from largeforge.domain.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotServedError,
)

EmbeddingInput = str | tuple[int, ...]
"""A text, or token ids of the model's vocabulary."""

MAX_INPUTS = 2048
"""Inputs in one request (OpenAI's limit)."""


@runtime_checkable
class EmbeddingEncoder(EmbeddingModel, Protocol):
    """An `EmbeddingModel` that also serves the embeddings API: its tokenizer, its window and
    plain vectors (unit length) for token ids."""

    @property
    def dimensions(self) -> int: ...

    @property
    def max_input_tokens(self) -> int:
        """The longest input (in tokens, special tokens included) the encoder takes."""
        ...

    @property
    def vocab_size(self) -> int: ...

    def tokenize(self, text: str) -> list[int]:
        """`text`'s ids as the encoder reads them (with its special tokens, e.g. [CLS] [SEP])."""
        ...

    def vectors(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One unit-length vector per input, in order (the encoder batches as it sees fit)."""
        ...


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[EmbeddingInput, ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Embedded:
    """The vectors, in the order of the inputs, and the tokens they cost."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


class EmbedTexts:
    """Embeds texts or token ids with the served embedding models, addressed by model id."""

    def __init__(self, encoders: Mapping[str, EmbeddingEncoder]) -> None:
        self._encoders = dict(encoders)

    def models(self) -> tuple[str, ...]:
        """Every embedding model id served."""
        return tuple(self._encoders)

    async def embed(self, request: EmbeddingRequest) -> Embedded:
        """The vectors of `request.inputs`; the encoder runs in a worker thread."""
        encoder = self._encoder(request.model)
        if request.dimensions is not None and request.dimensions != encoder.dimensions:
            raise InvalidRequestError(
                f"model '{request.model}' makes {encoder.dimensions}-dimensional embeddings; "
                f"dimensions={request.dimensions} is not supported",
                param="dimensions",
            )
        if not request.inputs:
            raise InvalidRequestError("input must not be empty", param="input")
        if len(request.inputs) > MAX_INPUTS:
            raise InvalidRequestError(f"at most {MAX_INPUTS} inputs per request", param="input")
        ids = [_ids(encoder, item, index) for index, item in enumerate(request.inputs)]
        vectors = await asyncio.to_thread(encoder.vectors, ids)
        return Embedded(tuple(tuple(v) for v in vectors), sum(len(i) for i in ids))

    def _encoder(self, model: str) -> EmbeddingEncoder:
        try:
            return self._encoders[model]
        except KeyError:
            raise ModelNotServedError(model, self.models()) from None


def _ids(encoder: EmbeddingEncoder, item: EmbeddingInput, index: int) -> list[int]:
    if isinstance(item, str):
        ids = encoder.tokenize(item)
    else:
        ids = list(item)
        if not ids:
            raise InvalidRequestError(f"input {index}: token ids must not be empty", param="input")
        if any(not 0 <= i < encoder.vocab_size for i in ids):
            raise InvalidRequestError(
                f"input {index}: token ids must be in [0, {encoder.vocab_size})", param="input"
            )
    if len(ids) > encoder.max_input_tokens:
        raise ContextLengthExceededError(
            f"input {index} has {len(ids)} tokens; this model takes at most "
            f"{encoder.max_input_tokens}",
            param="input",
        )
    return ids
