"""Output constraints on vLLM: its structured outputs, and a check that compiles them first.

vLLM enforces a `Constraint` with its xgrammar backend (`StructuredOutputsParams` per request).
The engine is started with `backend="xgrammar"` (no silent fallback to another library that
enforces a schema differently) and `disable_any_whitespace=True`, which vLLM applies engine-wide:
JSON comes out compact (separators `,` and `:`; the transformers engine's has no free whitespace
either, but writes `, ` and `: `).

vLLM compiles a grammar in its engine process, where a failure only ends the request with
finish reason `error`. `ConstraintCompiler` runs the same request check vLLM runs on
`add_request` and compiles the grammar with xgrammar against the model's tokenizer here
(`largeforge.adapters.grammar.xgrammar`, shared with the transformers engine), so a bad schema
is an `InvalidRequestError` before any generation.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from largeforge.adapters.grammar.messages import one_line
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tools import Constraint, ConstraintKind

CACHED_CONSTRAINTS = 256


def structured_outputs_config() -> Any:
    """vLLM's engine-wide structured-output settings: xgrammar, compact JSON."""
    from vllm.config import StructuredOutputsConfig

    return StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)


def structured_outputs(constraint: Constraint | None) -> Any:
    """`constraint` as vLLM's `StructuredOutputsParams` (None without a constraint)."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    kind = constraint.kind
    if kind is ConstraintKind.JSON_SCHEMA:
        schema = constraint.value()
        # (vLLM's xgrammar backend reads `disable_any_whitespace` from the engine's config only)
        return StructuredOutputsParams(json=schema if isinstance(schema, dict) else constraint.spec)
    if kind is ConstraintKind.REGEX:
        return StructuredOutputsParams(regex=constraint.spec)
    if kind is ConstraintKind.CHOICE:
        return StructuredOutputsParams(choice=_choices(constraint))
    if kind is ConstraintKind.GRAMMAR:
        return StructuredOutputsParams(grammar=constraint.spec)
    return StructuredOutputsParams(structural_tag=constraint.spec)


class ConstraintCompiler:
    """Checks constraints as vLLM will take them: the request check vLLM runs on `add_request`
    (memoised, successes only), then a compile against the model's tokenizer by the shared
    `XgrammarGrammarEngine` (which memoises compiles and refusals)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._grammars: Any = None
        self._accepted = functools.lru_cache(maxsize=CACHED_CONSTRAINTS)(self._vllm_check)

    def check(self, constraint: Constraint) -> None:
        """Raise `InvalidRequestError` (param None) with a one-line reason if it cannot compile."""
        self._accepted(constraint)
        self._grammar_engine().check(constraint)

    def _vllm_check(self, constraint: Constraint) -> None:
        """vLLM's own validation of the request (with the xgrammar backend it refuses schema
        features xgrammar would ignore, such as `multipleOf`)."""
        from vllm import SamplingParams as VllmParams
        from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

        try:
            constraint.value()  # JSON kinds: the spec is JSON text
            validate_xgrammar_grammar(VllmParams(structured_outputs=structured_outputs(constraint)))
        except Exception as exc:  # vLLM's errors, xgrammar's and JSON's have no common base
            raise InvalidRequestError(
                f"invalid {constraint.kind.value} constraint: {_reason(exc)}"
            ) from None

    def _grammar_engine(self) -> Any:
        if self._grammars is None:
            from largeforge.adapters.grammar.xgrammar import XgrammarGrammarEngine

            eos = self._tokenizer.eos_token_id  # (only compiles here: vLLM sets the stop tokens)
            stop = [] if eos is None else [eos]
            self._grammars = XgrammarGrammarEngine(self._tokenizer, self._vocab_size, stop)
        return self._grammars


def _choices(constraint: Constraint) -> list[str]:
    choices = constraint.value()
    if not choices or not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise InvalidRequestError("choices must be a non-empty list of strings")
    return choices


def _reason(exc: BaseException) -> str:
    """An error's first line, and its cause's when that adds to it (vLLM's "Invalid grammar
    specification." wraps the parser's reason)."""
    text = first_line(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and first_line(cause) not in text:
        text = f"{text} ({first_line(cause)})"
    return text


def first_line(exc: BaseException) -> str:
    """An error's first non-empty line (its type's name when it has none)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at character {exc.pos}"
    return one_line(exc)
