"""Verifiable rewards for GRPO: pure functions of a completion and its row's reference answer.

A run file lists rewards as mappings (`reward_spec` reads one, naming the offending key on any
problem, before a model loads). Each built-in scores one completion:

- `format`: 1.0 when `pattern` (a regular expression, `re.DOTALL`) is found by `re.search` in
  the stripped completion, else 0.0; anchor it with `^...$` to require the whole completion.
- `exact_answer`: 1.0 when the answer equals the row's reference after `normalize` (whitespace
  collapsed; `ignore_case` casefolds), else 0.0.
- `numeric_answer`: 1.0 when the last number in the answer equals the last number in the
  reference within `tolerance` (relative, at least 1e-9 absolute), else 0.0. `1,234` and `1234`
  are the same number.
- `json_schema`: 1.0 when the answer is JSON (the stripped text or one fenced block) that
  satisfies `schema`, else 0.0.
- `length_penalty`: 0.0 up to `max_chars` characters, then down linearly to -1.0 at twice that.
- `tool_call`: the calls the answer makes (in the model's tool-call format, parsed as serving
  parses them) against the calls the row's reference names, a JSON list of
  `{"name", "arguments"}` (one object for one call; `[]` when no call is right). 1.0 when they
  are equal (the same functions, arguments equal as JSON values, in any order), 0.5 when the
  right functions are called with other arguments, else 0.0. A row whose prompt carries tools is
  rendered with them, as `serve` renders a request's `tools`; a conversation whose last turn
  makes calls gives those calls as the reference. The parsing is its adapter's
  (`largeforge.adapters.trl.grpo_rewards`).
- `python`: the user's own function, `function: package.module:name`. It is called with
  keyword arguments `completions` (the texts), `prompts` (the prompts' messages), `reference`
  (one reference answer or None per completion) and the rows' other columns, and returns one
  float (or None) per completion. The import and the signature are checked before a model
  loads (`largeforge.adapters.system.user_functions`).

The answer is the whole stripped completion, or with `answer_pattern` the first group of its
last match (`<answer>(.*?)</answer>`, say); no match scores 0.0. A row without a reference
scores 0.0 on the answer rewards. `weighted_rewards` applies each reward's `weight`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from largeforge.domain.errors import ConfigError
from largeforge.domain.eval_matching import (
    ExpectedCall,
    MadeCall,
    MatchKind,
    match_text,
    normalize,
    score_calls,
)
from largeforge.domain.schema_check import unsupported_keywords


class RewardKind(StrEnum):
    FORMAT = "format"
    EXACT_ANSWER = "exact_answer"
    NUMERIC_ANSWER = "numeric_answer"
    JSON_SCHEMA = "json_schema"
    LENGTH_PENALTY = "length_penalty"
    TOOL_CALL = "tool_call"
    PYTHON = "python"


_OPTIONS: dict[RewardKind, frozenset[str]] = {
    RewardKind.FORMAT: frozenset({"pattern"}),
    RewardKind.EXACT_ANSWER: frozenset({"answer_pattern", "ignore_case"}),
    RewardKind.NUMERIC_ANSWER: frozenset({"answer_pattern", "tolerance"}),
    RewardKind.JSON_SCHEMA: frozenset({"answer_pattern", "schema"}),
    RewardKind.LENGTH_PENALTY: frozenset({"max_chars"}),
    RewardKind.TOOL_CALL: frozenset(),
    RewardKind.PYTHON: frozenset({"function"}),
}
_REQUIRED: dict[RewardKind, frozenset[str]] = {
    RewardKind.FORMAT: frozenset({"pattern"}),
    RewardKind.JSON_SCHEMA: frozenset({"schema"}),
    RewardKind.LENGTH_PENALTY: frozenset({"max_chars"}),
    RewardKind.PYTHON: frozenset({"function"}),
}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


@dataclass(frozen=True, slots=True)
class RewardSpec:
    """One built-in reward of a run file, with its options."""

    kind: RewardKind
    weight: float = 1.0
    pattern: str | None = None
    answer_pattern: str | None = None
    ignore_case: bool = False
    tolerance: float = 1e-6
    schema: Mapping[str, Any] | bool | None = None
    max_chars: int | None = None
    name: str = ""
    function: str | None = None  # `module:function` of a python reward

    @property
    def label(self) -> str:
        """The name its metrics go under (`name`, else the kind, else the function's name)."""
        if self.name:
            return self.name
        if self.kind is RewardKind.PYTHON and self.function:
            return self.function.rpartition(":")[2]
        return self.kind.value


def reward_spec(raw: Any, where: str = "rewards[0]") -> RewardSpec:
    """A `RewardSpec` from a run file's mapping; a `ConfigError` naming `where` and the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping with a `kind`, got {type(raw).__name__}")
    kind_name = raw.get("kind")
    known = [k.value for k in RewardKind]
    if kind_name not in known:
        raise ConfigError(f"{where}.kind: unknown reward {kind_name!r} (one of {', '.join(known)})")
    kind = RewardKind(kind_name)
    allowed = _OPTIONS[kind] | {"kind", "weight", "name"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: not an option of the {kind.value} reward")
    for key in sorted(_REQUIRED.get(kind, frozenset()) - set(raw)):
        raise ConfigError(f"{where}.{key}: the {kind.value} reward needs it")
    weight = _number(raw.get("weight", 1.0), f"{where}.weight")
    tolerance = _number(raw.get("tolerance", 1e-6), f"{where}.tolerance")
    if tolerance < 0:
        raise ConfigError(f"{where}.tolerance: must not be negative, got {tolerance}")
    if "pattern" in raw:
        _compile(raw["pattern"], f"{where}.pattern")
    if (
        "answer_pattern" in raw
        and _compile(raw["answer_pattern"], f"{where}.answer_pattern").groups < 1
    ):
        raise ConfigError(f"{where}.answer_pattern: needs a group around the answer")
    schema = raw.get("schema")
    if kind is RewardKind.JSON_SCHEMA:
        if not isinstance(schema, Mapping | bool):
            raise ConfigError(f"{where}.schema: must be a JSON Schema object")
        unsupported = unsupported_keywords(schema)
        if unsupported:
            raise ConfigError(f"{where}.schema: unsupported keyword {unsupported[0]}")
    max_chars = raw.get("max_chars")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ConfigError(f"{where}.max_chars: must be a positive integer, got {max_chars!r}")
    ignore_case = raw.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise ConfigError(f"{where}.ignore_case: must be true or false")
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string")
    function = raw.get("function")
    if function is not None and (not isinstance(function, str) or not _IMPORT_PATH.match(function)):
        raise ConfigError(
            f"{where}.function: must be an import path 'package.module:function', got {function!r}"
        )
    return RewardSpec(
        kind=kind,
        weight=weight,
        pattern=raw.get("pattern"),
        answer_pattern=raw.get("answer_pattern"),
        ignore_case=ignore_case,
        tolerance=tolerance,
        schema=schema,
        max_chars=max_chars,
        name=name,
        function=function,
    )


def reward_specs(raw: Any, key: str = "rewards") -> tuple[RewardSpec, ...]:
    """Every reward of a run file's list, each under its own label (`name` tells two rewards
    of one kind apart); a `ConfigError` naming the key on any problem."""
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or not raw:
        raise ConfigError(f"{key}: must be a non-empty list of rewards")
    specs = tuple(reward_spec(item, f"{key}[{index}]") for index, item in enumerate(raw))
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if spec.label in seen:
            raise ConfigError(
                f"{key}[{index}].name: another reward is already called {spec.label!r}"
            )
        seen.add(spec.label)
    return specs


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    return float(value)


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}: must be a regular expression string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: not a regular expression ({exc})") from None


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def last_number(text: str) -> float | None:
    """The last number written in `text` (`-3`, `2.5`, `1,234`, `6.02e23`), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1].replace(",", ""))
    return value if math.isfinite(value) else None


def extract_answer(completion: str, answer_pattern: str | None) -> str | None:
    """The stripped completion, or the first group of `answer_pattern`'s last match (None
    where it does not match)."""
    if answer_pattern is None:
        return completion.strip()
    matches = list(re.finditer(answer_pattern, completion, re.DOTALL))
    return matches[-1].group(1).strip() if matches else None


def score(spec: RewardSpec, completion: str, reference: str | None) -> float:
    """One reward of one completion (unweighted); a python or tool_call reward is its adapter's
    to compute (`tool_call_score` scores parsed calls)."""
    if spec.kind in (RewardKind.PYTHON, RewardKind.TOOL_CALL):
        raise ValueError(f"reward {spec.label!r} is computed by its adapter, not from text alone")
    if spec.kind is RewardKind.FORMAT:
        assert spec.pattern is not None
        return float(re.search(spec.pattern, completion.strip(), re.DOTALL) is not None)
    if spec.kind is RewardKind.LENGTH_PENALTY:
        assert spec.max_chars is not None
        over = max(0, len(completion) - spec.max_chars)
        return -min(1.0, over / spec.max_chars)
    answer = extract_answer(completion, spec.answer_pattern)
    if answer is None:
        return 0.0
    if spec.kind is RewardKind.JSON_SCHEMA:
        schema = True if spec.schema is None else spec.schema
        return float(match_text(answer, MatchKind.JSON_SCHEMA, schema=schema).matched)
    if reference is None:
        return 0.0
    if spec.kind is RewardKind.EXACT_ANSWER:
        same = normalize(answer, spec.ignore_case) == normalize(reference, spec.ignore_case)
        return float(same)
    got, want = last_number(answer), last_number(reference)
    if got is None or want is None:
        return 0.0
    return float(abs(got - want) <= max(spec.tolerance * abs(want), 1e-9))


def expected_calls(reference: str | None) -> tuple[ExpectedCall, ...] | None:
    """The calls a row's reference names (a JSON list of `{"name", "arguments"}`, or one such
    object; `[]`: no call), or None when the reference is missing or not that."""
    if reference is None:
        return None
    try:
        value = json.loads(reference)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, Mapping):
            return None
        calls.append(ExpectedCall(item["name"], arguments))
    return tuple(calls)


def tool_call_score(reference: str | None, made: Sequence[MadeCall]) -> float:
    """1.0 for the reference's calls exactly, 0.5 for its functions with other arguments, else
    0.0 (also for a row without a readable reference)."""
    expected = expected_calls(reference)
    if expected is None:
        return 0.0
    outcome = score_calls(expected, made)
    if outcome.correct:
        return 1.0
    return 0.5 if outcome.expects_call and outcome.function else 0.0


def weighted_rewards(
    specs: Sequence[RewardSpec], completion: str, reference: str | None
) -> tuple[float, dict[str, float]]:
    """The weighted sum of `specs` for one completion, and each reward unweighted by label."""
    each = {spec.label: score(spec, completion, reference) for spec in specs}
    total = sum(spec.weight * each[spec.label] for spec in specs)
    return total, each
