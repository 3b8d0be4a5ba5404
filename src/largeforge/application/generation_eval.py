"""The generation task of `largeforge eval`: prompts with references, answered greedily.

A file of JSON Lines, one prompt a row:

- `prompt` (text: one user turn) or `messages` (an OpenAI chat list ending with a user turn);
  optional `system` (a system turn put first, unless the messages start with one);
- `match`: `exact` (the default), `contains`, `regex` or `json_schema`
  (`largeforge.domain.eval_matching` says how each is matched);
- `reference`: the reference text (for `regex`, the pattern); `schema` for `json_schema`;
- optional `max_tokens` (default: the task's, 128) and `ignore_case` (`exact`, `contains`,
  `regex`). Other fields (an `id`, a category) are ignored.

Every row is checked when the file is read (a bad row is a `DatasetError` naming file, line,
field and reason), before any model loads. Answers come from `TextGeneration` with the model's
chat template, greedy, exactly as `largeforge serve` answers them.

Metrics: `match`, the share of rows whose answer matches; `valid_json`, over the `json_schema`
rows only, the share whose answer is JSON at all. Both with Wilson 95 % intervals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from largeforge.application.eval_rows import (
    answer_all,
    optional_max_tokens,
    read_rows,
    with_system,
)
from largeforge.application.ports import EngineFactory, RowSource
from largeforge.domain.datasets import Message, Role
from largeforge.domain.eval_matching import MatchKind, TextMatch, match_text
from largeforge.domain.evaluation import ModelVariant, Score, proportion_score
from largeforge.domain.formats import RowError, json_type, parse_message_list
from largeforge.domain.generation import ChatRequest, SamplingParams
from largeforge.domain.schema_check import unsupported_keywords

log = structlog.get_logger(__name__)

DEFAULT_MAX_TOKENS = 128
"""Tokens an answer may take when its row sets no `max_tokens`."""


@dataclass(frozen=True, slots=True)
class GenerationCase:
    """One row: the prompt, how to match the answer, and the budget (None: the task's)."""

    line: int
    messages: tuple[Message, ...]
    match: MatchKind = MatchKind.EXACT
    reference: str = ""
    schema: Mapping[str, Any] | bool | None = None
    max_tokens: int | None = None
    ignore_case: bool = False

    def judge(self, answer: str) -> TextMatch:
        return match_text(
            answer, self.match, self.reference, schema=self.schema, ignore_case=self.ignore_case
        )


def prompt_messages(row: Mapping[str, Any]) -> tuple[Message, ...]:
    """`prompt` (text or messages) or `messages`, with `system` first; must end with a user."""
    given = [key for key in ("prompt", "messages") if key in row]
    if len(given) != 1:
        raise RowError("give exactly one of 'prompt' (text) or 'messages' (a chat list)", "prompt")
    key = given[0]
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"'{key}' is empty", key)
        messages: tuple[Message, ...] = (Message(Role.USER, value),)
    else:
        messages = parse_message_list(value, key)
    messages = with_system(row, messages)
    if messages[-1].role is not Role.USER:
        raise RowError(
            f"the conversation must end with a user turn, not {messages[-1].role.value}", key
        )
    return messages


def parse_generation_row(row: Mapping[str, Any], line: int) -> GenerationCase:
    """One row of a generation file, checked whole (a `RowError` names the field)."""
    messages = prompt_messages(row)
    kind_value = row.get("match", MatchKind.EXACT.value)
    try:
        kind = MatchKind(kind_value)
    except ValueError:
        allowed = ", ".join(k.value for k in MatchKind)
        raise RowError(f"unknown match {kind_value!r} (allowed: {allowed})", "match") from None
    ignore_case = row.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise RowError(f"'ignore_case' must be true or false, got {ignore_case!r}", "ignore_case")
    reference = row.get("reference")
    schema = None
    if kind is MatchKind.JSON_SCHEMA:
        if "schema" not in row:
            raise RowError("a json_schema row needs a 'schema'", "schema")
        schema = row["schema"]
        if not isinstance(schema, Mapping | bool):
            got = json_type(schema)
            raise RowError(f"'schema' must be a JSON Schema object, got {got}", "schema")
        unsupported = unsupported_keywords(schema)
        if unsupported:
            raise RowError(
                f"the schema uses what the checker cannot enforce: {', '.join(unsupported)}",
                "schema",
            )
        reference = reference if isinstance(reference, str) else ""
    else:
        if not isinstance(reference, str) or not reference.strip():
            raise RowError(
                f"a {kind.value} row needs a non-empty string 'reference', "
                f"got {json_type(reference)}",
                "reference",
            )
        if kind is MatchKind.REGEX:
            try:
                re.compile(reference)
            except re.error as exc:
                raise RowError(f"'reference' is not a valid regex: {exc}", "reference") from None
    return GenerationCase(
        line=line,
        messages=messages,
        match=kind,
        reference=reference,
        schema=schema,
        max_tokens=optional_max_tokens(row),
        ignore_case=ignore_case,
    )


def read_generation_file(source: RowSource, path: str) -> tuple[GenerationCase, ...]:
    """Every row of a generation file, or a `DatasetError` naming each bad row's line."""
    return read_rows(source, path, parse_generation_row)


class GenerationEvalTask:
    """`EvaluationTask` over generation rows: greedy answers scored by each row's match."""

    def __init__(
        self,
        name: str,
        cases: Sequence[GenerationCase],
        engines: EngineFactory,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        concurrency: int = 8,
    ) -> None:
        if not cases:
            raise ValueError("a generation task needs at least one row")
        self._name = name
        self._cases = tuple(cases)
        self._engines = engines
        self._max_tokens = max_tokens
        self._concurrency = concurrency

    @property
    def name(self) -> str:
        return self._name

    def requests(self, model: str) -> list[ChatRequest]:
        """One greedy request per row, addressed to `model`."""
        return [
            ChatRequest(
                model,
                case.messages,
                SamplingParams(max_tokens=case.max_tokens or self._max_tokens, temperature=0.0),
            )
            for case in self._cases
        ]

    def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]:
        engine = self._engines.open(variant)
        try:
            choices = answer_all(
                engine,
                self.requests(variant.name),
                lines=[c.line for c in self._cases],
                name=self._name,
                concurrency=self._concurrency,
            )
        finally:
            engine.close()
        return self.score([choice.text for choice in choices])

    def score(self, answers: Sequence[str]) -> tuple[Score, ...]:
        """The metrics of one answer per row (in row order)."""
        judged = [case.judge(answer) for case, answer in zip(self._cases, answers, strict=True)]
        for case, answer, verdict in zip(self._cases, answers, judged, strict=True):
            if not verdict.matched:
                log.debug("generation_mismatch", task=self._name, line=case.line, answer=answer)
        scores = [proportion_score(self._name, "match", [j.matched for j in judged])]
        json_rows = [j.valid_json for j in judged if j.valid_json is not None]
        if json_rows:
            scores.append(proportion_score(self._name, "valid_json", json_rows))
        return tuple(scores)
