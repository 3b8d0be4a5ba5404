"""Per-sequence token selection and incremental detokenization for the batching engine."""

from __future__ import annotations

from typing import Any

import torch

from largeforge.domain.generation import SamplingParams, TokenLogprob


class TokenTexts:
    """Token id -> its text as one token (memoised; used for logprob entries)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._memo: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._memo.get(token_id)
        if text is None:
            text = self._tokenizer.decode([token_id])
            self._memo[token_id] = text
        return text


def logprob_entry(
    logprobs: torch.Tensor, token_id: int, top: int, texts: TokenTexts
) -> TokenLogprob:
    """The chosen token's log-probability and the `top` most likely alternatives."""
    alternatives: tuple[tuple[str, float], ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        alternatives = tuple(
            (texts(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        )
    return TokenLogprob(texts(token_id), float(logprobs[token_id]), alternatives, token_id)


def choose_token(
    logits: torch.Tensor,
    params: SamplingParams,
    counts: torch.Tensor | None,
    generator: torch.Generator | None,
) -> int:
    """One token from a row of logits under `params` (penalties, temperature, top-k, top-p).

    Log-probabilities reported to clients come from the raw logits, as vLLM and OpenAI do.
    """
    scores = logits
    if counts is not None and params.penalized:
        scores = scores - params.frequency_penalty * counts
        scores = scores - params.presence_penalty * (counts > 0).to(scores.dtype)
    if params.greedy:
        return int(torch.argmax(scores))
    scores = scores / params.temperature
    if params.top_k > 0 and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        drop = torch.cumsum(probs, dim=-1) - probs > params.top_p  # keeps at least one token
        ordered = ordered.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, ordered)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas without re-decoding everything.

    Text is held back while it ends in an incomplete UTF-8 sequence (U+FFFD), so the joined
    deltas equal `tokenizer.decode(all_ids, skip_special_tokens=True)`.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before, after = self._window()
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        before, after = self._window()
        self._prefix = self._read = len(self._ids)
        return after[len(before) :]

    def _window(self) -> tuple[str, str]:
        """The text of the ids already emitted in the window, and of the whole window."""
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self._ids[self._prefix :], skip_special_tokens=True)
        return str(before), str(after)
