"""How generated answers and tool calls are matched against references (pure functions).

Text answers (`MatchKind`):

- `exact`: the answer equals the reference after `normalize` on both (leading and trailing
  whitespace stripped, every run of whitespace made one space); with `ignore_case`, casefolded.
- `contains`: the normalized reference occurs in the normalized answer.
- `regex`: the reference is a regular expression that `re.search` finds in the stripped answer
  (anchor it with `^...$` for a whole-answer match; `ignore_case` adds `re.IGNORECASE`).
- `json_schema`: the answer is JSON (`parse_json_answer`: the whole stripped answer, or the one
  fenced code block it consists of) and satisfies the row's schema.

Tool calls: an expected call matches a made call when the names are equal and the arguments are
equal as JSON values (`json_equal`: object keys in any order). Several calls match as a
multiset: every expected call pairs with its own made call, in any order, and no call is left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from largeforge.domain.schema_check import check_instance, json_equal


class MatchKind(StrEnum):
    EXACT = "exact"
    CONTAINS = "contains"
    REGEX = "regex"
    JSON_SCHEMA = "json_schema"


_BLANKS = re.compile(r"\s+")
_FENCED = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)


def normalize(text: str, ignore_case: bool = False) -> str:
    """Strip, collapse every run of whitespace to one space, casefold with `ignore_case`."""
    text = _BLANKS.sub(" ", text).strip()
    return text.casefold() if ignore_case else text


_NOT_JSON = object()


def parse_json_answer(text: str) -> Any:
    """The JSON value an answer is: its stripped text, or the body of the single fenced code
    block (```json ... ```) it consists of; `NOT_JSON` when neither parses."""
    stripped = text.strip()
    fenced = _FENCED.match(stripped)
    for candidate in (stripped, fenced.group(1) if fenced else None):
        if candidate is None:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return _NOT_JSON


def is_json(value: Any) -> bool:
    """Whether `parse_json_answer` found JSON."""
    return value is not _NOT_JSON


@dataclass(frozen=True, slots=True)
class TextMatch:
    """How one answer fares: `matched`, and for `json_schema` rows whether it was JSON."""

    matched: bool
    valid_json: bool | None = None


def match_text(
    answer: str,
    kind: MatchKind,
    reference: str = "",
    *,
    schema: Mapping[str, Any] | bool | None = None,
    ignore_case: bool = False,
) -> TextMatch:
    """Match `answer` against `reference` (or `schema` for `json_schema`)."""
    if kind is MatchKind.EXACT:
        return TextMatch(normalize(answer, ignore_case) == normalize(reference, ignore_case))
    if kind is MatchKind.CONTAINS:
        return TextMatch(normalize(reference, ignore_case) in normalize(answer, ignore_case))
    if kind is MatchKind.REGEX:
        flags = re.IGNORECASE if ignore_case else 0
        return TextMatch(re.search(reference, answer.strip(), flags) is not None)
    value = parse_json_answer(answer)
    if not is_json(value):
        return TextMatch(False, valid_json=False)
    return TextMatch(check_instance(value, True if schema is None else schema) is None, True)


# ---------- tool calls ----------


@dataclass(frozen=True, slots=True)
class ExpectedCall:
    """A call a row expects: the function and its arguments (decoded JSON)."""

    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MadeCall:
    """A call the model made: the function and its arguments as the JSON text it wrote."""

    name: str
    arguments: str

    def decoded(self) -> Any:
        """The arguments decoded, or `NOT_JSON`."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return _NOT_JSON

    @property
    def valid_json(self) -> bool:
        """Whether the arguments are a JSON object."""
        return isinstance(self.decoded(), dict)


def calls_equal(expected: ExpectedCall, made: MadeCall) -> bool:
    """Same function, arguments equal as JSON values."""
    return expected.name == made.name and json_equal(made.decoded(), expected.arguments)


def names_match(expected: Sequence[ExpectedCall], made: Sequence[MadeCall]) -> bool:
    """The same functions called, as many times each (in any order)."""
    return sorted(c.name for c in expected) == sorted(c.name for c in made)


def all_calls_match(expected: Sequence[ExpectedCall], made: Sequence[MadeCall]) -> bool:
    """Every expected call pairs with a distinct made call that equals it, none left over.

    Greedy pairing is exact here: equality is transitive, so calls fall into classes and any
    pairing within a class is as good as another.
    """
    if len(expected) != len(made):
        return False
    left = list(made)
    for call in expected:
        found = next((i for i, m in enumerate(left) if calls_equal(call, m)), None)
        if found is None:
            return False
        left.pop(found)
    return True


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One tool-call row scored.

    `expects_call` says whether the row expects calls (else: no call is the right answer);
    `function` whether the right functions were called; `arguments` whether, those being right,
    the arguments are equal too; `correct` the row's verdict (`accuracy`).
    """

    expects_call: bool
    called: bool
    function: bool
    arguments: bool
    correct: bool


def score_calls(expected: Sequence[ExpectedCall] | None, made: Sequence[MadeCall]) -> CallOutcome:
    """Score the calls made against the expected ones (None or empty: no call is expected)."""
    if not expected:
        return CallOutcome(False, bool(made), False, False, correct=not made)
    function = names_match(expected, made)
    arguments = function and all_calls_match(expected, made)
    return CallOutcome(True, bool(made), function, arguments, correct=arguments)
