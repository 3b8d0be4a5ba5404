"""`Constraint`s compiled by xgrammar for one tokenizer, matchers and token bitmasks.

One `GrammarCompiler` per engine (its own cache on), and on top of it an LRU of compiled
grammars keyed by the `Constraint` value, so a repeated schema costs a dictionary look-up, not
a compile (the compiler's cache still hashes and serializes the spec). Failures are memoised
too: a bad schema sent again is refused without compiling again.

JSON Schemas compile without free whitespace (`any_whitespace=False`: one space after `:` and
`,`, none elsewhere). With any whitespace allowed, a small model sampling at temperature 1
can emit blanks until its token budget runs out.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import xgrammar as xgr

from largeforge.adapters.grammar.ebnf import ebnf_literal
from largeforge.adapters.grammar.messages import one_line
from largeforge.adapters.grammar.schema_support import structural_tag_feature
from largeforge.adapters.grammar.schema_support import unsupported_feature as json_schema_feature
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tools import Constraint, ConstraintKind

CACHE_SIZE = 256
"""Compiled grammars (and refusals) kept by `XgrammarGrammarEngine`, least recently used out."""


class XgrammarGrammarEngine:
    """Compiles `Constraint`s for one tokenizer and hands out a `GrammarMatcher` per sequence.

    `vocab_size` is the model's (its embedding rows, which may exceed the tokenizer's);
    `stop_token_ids` are the tokens that end a sequence once its grammar is complete.
    `compiles` counts real compiles (cache misses), for tests and benchmarks.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        cache_size: int = CACHE_SIZE,
        max_threads: int = 8,
    ) -> None:
        self._info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
        )
        self._compiler = xgr.GrammarCompiler(
            self._info, max_threads=max_threads, cache_enabled=True
        )
        self._vocab_size = vocab_size
        self._cache_size = cache_size
        self._cache: OrderedDict[Constraint, xgr.CompiledGrammar | str] = OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def compile(self, constraint: Constraint) -> xgr.CompiledGrammar:
        """The compiled grammar of `constraint` (memoised); `InvalidRequestError` if it has none."""
        with self._lock:
            found = self._cache.get(constraint)
            if found is not None:
                self._cache.move_to_end(constraint)
        if found is None:
            try:
                found = _compile(self._compiler, constraint)
            except Exception as exc:  # xgrammar raises RuntimeError and its subclasses, ValueError
                found = one_line(exc)
            with self._lock:
                self.compiles += 1
                self._cache[constraint] = found
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if isinstance(found, str):
            raise InvalidRequestError(f"invalid {constraint.kind.value} constraint: {found}")
        return found

    def check(self, constraint: Constraint) -> None:
        """Compile `constraint` (cached) or raise `InvalidRequestError` with the reason."""
        self.compile(constraint)

    def matcher(self, constraint: Constraint) -> xgr.GrammarMatcher:
        """A fresh matcher of `constraint` for one sequence."""
        return xgr.GrammarMatcher(self.compile(constraint))

    def bitmask(self, rows: int, device: str | torch.device) -> TokenBitmask:
        """A reusable mask for batches of up to `rows` sequences with logits on `device`."""
        return TokenBitmask(self._vocab_size, rows, device)


class TokenBitmask:
    """One bitmask buffer reused at every step: filled from the matchers of the constrained
    rows of a batch, then applied to those rows of its logits (others are left alone)."""

    def __init__(self, vocab_size: int, rows: int, device: str | torch.device) -> None:
        self._vocab_size = vocab_size
        self._device = torch.device(device)
        self._bits = xgr.allocate_token_bitmask(rows, vocab_size)
        if self._device.type == "cuda":
            self._bits = self._bits.pin_memory()

    @property
    def rows(self) -> int:
        return int(self._bits.shape[0])

    def apply(self, logits: torch.Tensor, matchers: Sequence[tuple[int, Any]]) -> None:
        """Mask in place, in each `(row, matcher)`'s row of `logits`, every token its grammar
        does not allow next (logits wider than the vocabulary are masked beyond it too)."""
        rows = [
            row for row, matcher in matchers if matcher.fill_next_token_bitmask(self._bits, row)
        ]
        if not rows:
            return
        width = logits.shape[-1]
        vocab = min(width, self._vocab_size)
        bits = self._bits[: logits.shape[0]]
        if bits.device != logits.device:
            bits = bits.to(logits.device, non_blocking=True)
        xgr.apply_token_bitmask_inplace(logits, bits, vocab_size=vocab, indices=rows)
        if width > vocab:
            logits[rows, vocab:] = float("-inf")


def _compile(compiler: xgr.GrammarCompiler, constraint: Constraint) -> xgr.CompiledGrammar:
    kind, spec = constraint.kind, constraint.spec
    if kind in (ConstraintKind.JSON_SCHEMA, ConstraintKind.STRUCTURAL_TAG):
        try:
            value = json.loads(spec)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        found = json_schema_feature(value) if kind is ConstraintKind.JSON_SCHEMA else (
            structural_tag_feature(value)
        )  # fmt: skip
        if found is not None:  # compiled, it would be ignored: answers could break the schema
            raise ValueError(found)
    if kind is ConstraintKind.JSON_SCHEMA:
        return compiler.compile_json_schema(spec, any_whitespace=False)
    if kind is ConstraintKind.REGEX:
        return compiler.compile_regex(spec)
    if kind is ConstraintKind.CHOICE:
        return compiler.compile_grammar(choice_grammar(spec))
    if kind is ConstraintKind.GRAMMAR:
        return compiler.compile_grammar(spec, root_rule_name="root")
    if kind is ConstraintKind.STRUCTURAL_TAG:
        return compiler.compile_structural_tag(spec)
    raise ValueError(f"unknown constraint kind {kind!r}")


def choice_grammar(spec: str) -> str:
    """An EBNF grammar whose `root` is exactly one of the strings of the JSON list `spec`."""
    try:
        choices = json.loads(spec)
    except ValueError as exc:
        raise ValueError(f"choices are not JSON: {exc}") from None
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError("choices must be a list of strings")
    if not choices:
        raise ValueError("choices must not be empty")
    return "root ::= " + " | ".join(ebnf_literal(c) for c in dict.fromkeys(choices))
