"""Cascades: ask the cheapest expert first and escalate while its answer fails a check.

A `Cascade` is an ordered list of `CascadeStep`s, each an expert (or a whole route) with the
checks its answer must pass. The checks here are pure functions of the request and the
answer; the judge check asks another expert, so the service runs it (`CheckKind.JUDGE`).

- `logprob`: the mean (or minimum) token log-probability of the answer reaches a threshold:
  a model unsure of its answer hands it on.
- `json_schema`: the answer is JSON satisfying the request's `response_format` schema (or the
  check's own `schema`); a request that asks for no JSON and a check with no schema passes.
- `tool_call`: every call names an offered tool and its arguments satisfy that tool's
  parameters; `tool_choice` "required" or a named function needs at least one call.
- `regex`: `re.search` finds the pattern in the answer's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from largeforge.domain.errors import ConfigError
from largeforge.domain.eval_matching import is_json, parse_json_answer
from largeforge.domain.schema_check import check_instance, unsupported_keywords


class CheckKind(StrEnum):
    LOGPROB = "logprob"
    JSON_SCHEMA = "json_schema"
    TOOL_CALL = "tool_call"
    REGEX = "regex"
    JUDGE = "judge"


class Exhausted(StrEnum):
    """What a cascade does when its last step's answer fails too."""

    ERROR = "error"  # an error in the OpenAI shape: no failing answer reaches the client
    LAST = "last"  # the last step's answer, with the failed check in the headers


DEFAULT_JUDGE_PROMPT = (
    "Question:\n{question}\n\nAnswer:\n{answer}\n\n"
    "Is the answer correct and complete? Reply with yes or no."
)


@dataclass(frozen=True)
class CascadeCheck:
    """One check of a step's answer; only the fields of its `kind` are read."""

    kind: CheckKind
    mean: float | None = None  # logprob: the mean token logprob must be >= this
    min: float | None = None  # logprob: every token's logprob must be >= this
    pattern: str = ""  # regex
    schema: Mapping[str, Any] | None = None  # json_schema: used when the request has none
    judge: str = ""  # judge: the expert asked for a verdict
    prompt: str = DEFAULT_JUDGE_PROMPT  # judge: {question} and {answer} are filled in
    passes: str = r"^\W*yes\b"  # judge: a verdict matching this (case-insensitive) passes

    def __post_init__(self) -> None:
        kind = self.kind
        if kind is CheckKind.LOGPROB and self.mean is None and self.min is None:
            raise ConfigError("a logprob check needs 'mean' or 'min' (a log-probability <= 0)")
        if kind is CheckKind.REGEX:
            _compile(self.pattern, "pattern")
        if kind is CheckKind.JUDGE:
            if not self.judge:
                raise ConfigError("a judge check needs 'judge': the expert that gives a verdict")
            _compile(self.passes, "passes")
            for field_name in ("{question}", "{answer}"):
                if field_name not in self.prompt:
                    raise ConfigError(f"a judge check's prompt must contain {field_name}")
        if self.schema is not None:
            bad = unsupported_keywords(self.schema)
            if bad:
                raise ConfigError(f"a json_schema check's schema cannot be checked at {bad[0]}")

    @property
    def needs_logprobs(self) -> bool:
        return self.kind is CheckKind.LOGPROB


@dataclass(frozen=True)
class CascadeStep:
    """An expert (or the router's name: the routed expert) and the checks of its answer."""

    target: str
    checks: tuple[CascadeCheck, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every expert (or route) the step asks: its target, then its judges."""
        judges = (c.judge for c in self.checks if c.kind is CheckKind.JUDGE)
        return (self.target, *judges)


@dataclass(frozen=True)
class Cascade:
    """Steps from the cheapest up; the first answer that passes its step's checks is sent."""

    name: str
    steps: tuple[CascadeStep, ...]
    on_exhausted: Exhausted = Exhausted.ERROR

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError(f"cascade '{self.name}' needs at least one step")

    @property
    def needs_logprobs(self) -> bool:
        return any(c.needs_logprobs for s in self.steps for c in s.checks)

    def uses(self, name: str) -> bool:
        """Whether any step asks expert (or route) `name`, as its target or its judge."""
        return any(name in step.names for step in self.steps)


@dataclass(frozen=True)
class Answer:
    """One choice of a chat answer, as the checks see it."""

    content: str
    calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments as JSON text)
    logprobs: tuple[float, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # one line: why it failed, or what passed


PASSED = Verdict(True, "passed")


@dataclass(frozen=True)
class StepOutcome:
    """What happened at one step: the expert asked, the verdict, the tokens it cost."""

    step: int  # 1-based
    expert: str
    verdict: Verdict
    cost: float = 0.0
    failed_check: str = ""  # the check kind that failed, or "unavailable"

    def describe(self) -> str:
        return f"{self.step}:{self.expert}: {self.verdict.reason}"


@dataclass(frozen=True)
class CascadeTrace:
    """Every step tried, in order; the last one answered (or exhausted the cascade)."""

    cascade: str
    outcomes: tuple[StepOutcome, ...] = field(default=())

    @property
    def answered(self) -> bool:
        return bool(self.outcomes) and self.outcomes[-1].verdict.passed

    @property
    def cost(self) -> float:
        return sum(o.cost for o in self.outcomes)


def check_cascades(cascades: Sequence[Cascade], experts: Sequence[str], route: str) -> None:
    """`ConfigError` unless every cascade has its own name, apart from the experts and the
    route, and every step and judge names an expert or the route."""
    known = {*experts, route}
    seen: set[str] = set()
    for cascade in cascades:
        if cascade.name in known or cascade.name in seen:
            raise ConfigError(
                f"cascade '{cascade.name}': the name is taken by an expert, the route or "
                "another cascade"
            )
        seen.add(cascade.name)
        for number, step in enumerate(cascade.steps, 1):
            for target in step.names:
                if target not in known:
                    raise ConfigError(
                        f"cascade '{cascade.name}' step {number}: '{target}' is not an expert "
                        f"or the route '{route}'; experts: {', '.join(experts)}"
                    )


def check_answer(check: CascadeCheck, request: Mapping[str, Any], answer: Answer) -> Verdict:
    """Whether `answer` to the chat `request` passes `check` (not the judge: see the service)."""
    kind = check.kind
    if kind is CheckKind.LOGPROB:
        return _logprob(check, answer)
    if kind is CheckKind.JSON_SCHEMA:
        return _json_schema(check, request, answer)
    if kind is CheckKind.TOOL_CALL:
        return _tool_calls(request, answer)
    if kind is CheckKind.REGEX:
        if re.search(check.pattern, answer.content) is None:
            return Verdict(False, f"regex: no match of {check.pattern!r}")
        return PASSED
    raise ValueError(f"the {kind.value} check is run by the service")


def _logprob(check: CascadeCheck, answer: Answer) -> Verdict:
    if not answer.logprobs:
        return Verdict(False, "logprob: the answer has no token logprobs")
    mean = sum(answer.logprobs) / len(answer.logprobs)
    low = min(answer.logprobs)
    if check.mean is not None and mean < check.mean:
        return Verdict(False, f"logprob: mean {mean:.3f} < {check.mean:g}")
    if check.min is not None and low < check.min:
        return Verdict(False, f"logprob: min {low:.3f} < {check.min:g}")
    return Verdict(True, f"logprob: mean {mean:.3f}")


def requested_schema(request: Mapping[str, Any]) -> Mapping[str, Any] | bool | None:
    """The schema the request's `response_format` asks for (True: any JSON object), or None."""
    response_format = request.get("response_format")
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return schema if isinstance(schema, Mapping | bool) else True
    return None


def _json_schema(check: CascadeCheck, request: Mapping[str, Any], answer: Answer) -> Verdict:
    schema = requested_schema(request)
    if schema is None:
        schema = check.schema
    if schema is None:
        return Verdict(True, "json_schema: no schema requested")
    if answer.calls and not answer.content.strip():
        return Verdict(True, "json_schema: the answer is tool calls")
    value = parse_json_answer(answer.content)
    if not is_json(value):
        truncated = " (cut at max_tokens)" if answer.finish_reason == "length" else ""
        return Verdict(False, f"json_schema: the answer is not JSON{truncated}")
    problem = check_instance(value, schema)
    if problem is not None:
        return Verdict(False, f"json_schema: {problem}")
    return Verdict(True, "json_schema: valid")


def _tool_calls(request: Mapping[str, Any], answer: Answer) -> Verdict:
    offered = _offered_tools(request)
    if not offered:
        return Verdict(True, "tool_call: no tools offered")
    choice = request.get("tool_choice")
    must_call = choice == "required" or isinstance(choice, Mapping)
    if must_call and not answer.calls:
        return Verdict(False, "tool_call: a call was required and none was made")
    for name, arguments in answer.calls:
        if name not in offered:
            return Verdict(False, f"tool_call: '{name}' is not an offered tool")
        try:
            value = json.loads(arguments)
        except ValueError:
            return Verdict(False, f"tool_call: the arguments of '{name}' are not JSON")
        problem = check_instance(value, offered[name])
        if problem is not None:
            return Verdict(False, f"tool_call: '{name}' arguments: {problem}")
    return Verdict(True, f"tool_call: {len(answer.calls)} valid call(s)")


def _offered_tools(request: Mapping[str, Any]) -> dict[str, Any]:
    tools = request.get("tools")
    offered: dict[str, Any] = {}
    if not isinstance(tools, Sequence):
        return offered
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            supported = parameters is None or not unsupported_keywords(parameters)
            offered[function["name"]] = (parameters or True) if supported else True
    return offered


def answers_of(payload: Mapping[str, Any]) -> list[Answer]:
    """Each choice of an OpenAI chat completion (a dict) as an `Answer`."""
    answers = []
    for choice in payload.get("choices") or ():
        message = choice.get("message") or {}
        calls = tuple(
            (str(c["function"].get("name", "")), str(c["function"].get("arguments", "")))
            for c in message.get("tool_calls") or ()
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
        )
        logprobs = tuple(
            float(e["logprob"])
            for e in ((choice.get("logprobs") or {}).get("content") or ())
            if isinstance(e, Mapping) and isinstance(e.get("logprob"), int | float)
        )
        answers.append(
            Answer(message.get("content") or "", calls, logprobs, choice.get("finish_reason"))
        )
    return answers


def _compile(pattern: str, name: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"'{name}' is not a regular expression: {exc}") from None
