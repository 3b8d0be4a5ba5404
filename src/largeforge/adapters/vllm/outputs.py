"""vLLM's log-probabilities as `TokenLogprob`s, with nothing dropped or made up.

vLLM returns, per position, a map {token id: Logprob} holding the chosen (or prompt) token and
the most likely alternatives. These functions read that shape without importing vLLM; anything
missing is an `EngineFaultError`, never a shorter list or a `None` that callers would score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from largeforge.domain.errors import EngineFaultError
from largeforge.domain.generation import TokenLogprob

Texts = Callable[[int], str]
Options = Mapping[int, Any]


def token_entry(options: Options | None, token: int, top: int, texts: Texts) -> TokenLogprob:
    """`token`'s log-probability and the `top` most likely alternatives at one position."""
    if not options or token not in options:
        raise EngineFaultError(f"vLLM returned no log-probability for token id {token}")
    chosen = options[token]
    ranked = sorted(options.items(), key=lambda item: item[1].logprob, reverse=True)
    alternatives = tuple((texts(int(i)), float(lp.logprob)) for i, lp in ranked[:top])
    return TokenLogprob(texts(token), float(chosen.logprob), alternatives, token)


def prompt_entries(
    ids: Sequence[int], scored: Sequence[Options | None] | None, top: int, texts: Texts
) -> list[TokenLogprob]:
    """One entry per prompt token from vLLM's `prompt_logprobs` (the first token: None).

    `scored` must hold one position per prompt token, as vLLM returns it (its first is None).
    """
    ids = list(ids)
    if not ids:
        return []
    if scored is None or len(scored) != len(ids):
        count = "none" if scored is None else len(scored)
        raise EngineFaultError(
            f"vLLM returned {count} prompt log-probabilities for a prompt of {len(ids)} tokens"
        )
    entries = [TokenLogprob(texts(ids[0]), None, (), ids[0])]
    for position in range(1, len(ids)):
        try:
            entries.append(token_entry(scored[position], ids[position], top, texts))
        except EngineFaultError as exc:
            raise EngineFaultError(f"prompt position {position}: {exc}") from None
    return entries


def step_entries(
    tokens: Sequence[int], scored: Sequence[Options] | None, top: int | None, texts: Texts
) -> list[TokenLogprob | None]:
    """Entries for the tokens of one output delta: all None unless logprobs were asked for."""
    if top is None or not tokens:
        return [None] * len(tokens)
    if scored is None or len(scored) != len(tokens):
        count = "none" if scored is None else len(scored)
        raise EngineFaultError(
            f"vLLM returned {count} log-probabilities for {len(tokens)} generated tokens"
        )
    return [
        token_entry(options, token, top, texts)
        for token, options in zip(tokens, scored, strict=True)
    ]
