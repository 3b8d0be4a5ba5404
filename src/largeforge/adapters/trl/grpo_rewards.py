"""GRPO's reward functions as TRL calls them: the built-ins of `largeforge.domain.rewards` and
the user's `module:function` rewards, each named by its label (TRL logs `rewards/<name>/mean`).

TRL calls a reward function with `prompts`, `completions` (messages, for conversational
prompts), `completion_ids`, the trainer state and every other dataset column as keywords.
These wrappers hand the built-ins and the user's functions the completions' text."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from largeforge.adapters.system.user_functions import (
    check_keywords,
    import_function,
    takes_kwargs,
)
from largeforge.adapters.tools.registry import tool_call_format
from largeforge.application.ports import ToolCallFormat
from largeforge.application.tool_replies import ReplySplitter, joined_calls
from largeforge.domain.errors import TrainingError
from largeforge.domain.eval_matching import MadeCall
from largeforge.domain.rewards import RewardKind, RewardSpec, score, tool_call_score

USER_KEYWORDS = ("completions", "prompts", "reference")
"""What a user's reward is always called with; a function with `**kwargs` also gets the rows'
other columns."""

_TRL_ONLY = (
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
    "tool_names",  # LargeForge's own column, for the tool_call reward
)


def text_of(completion: Any) -> str:
    """A completion's text: the string, or the content of its messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def check_rewards(specs: Sequence[RewardSpec], key: str = "grpo.rewards") -> None:
    """Import and check every user reward (a `ConfigError` naming the key on a problem)."""
    for index, spec in enumerate(specs):
        if spec.kind is RewardKind.PYTHON:
            assert spec.function is not None
            where = f"{key}[{index}].function"
            check_keywords(import_function(spec.function, where), USER_KEYWORDS, where)


def reward_functions(
    specs: Sequence[RewardSpec], key: str = "grpo.rewards", tool_format: str = "hermes"
) -> list[Callable[..., list[float | None]]]:
    """One TRL reward function per spec, in order (their weights go to `reward_weights`);
    `tool_format` is the tool-call format the model writes (its chat template's)."""
    check_rewards(specs, key)
    functions = []
    for spec in specs:
        if spec.kind is RewardKind.PYTHON:
            functions.append(_user(spec))
        elif spec.kind is RewardKind.TOOL_CALL:
            functions.append(_tool_call(spec, tool_format))
        else:
            functions.append(_builtin(spec))
    return functions


def made_calls(text: str, tool_format: ToolCallFormat, tools: Sequence[str]) -> list[MadeCall]:
    """The calls an answer makes, parsed as `serve` parses them (a call of a function the
    prompt did not offer is left out)."""
    splitter = ReplySplitter(tool_format, frozenset(tools))
    deltas = [*splitter.feed(text)[1], *splitter.finish()[1]]
    return [MadeCall(call.name, call.arguments) for call in joined_calls(deltas)]


def _tool_call(spec: RewardSpec, format_name: str) -> Callable[..., list[float | None]]:
    tool_format = tool_call_format(format_name)

    def reward(
        completions: Sequence[Any],
        reference: Sequence[str | None] | None = None,
        tool_names: Sequence[Sequence[str] | None] | None = None,
        **_: Any,
    ) -> list[float | None]:
        references = reference if reference is not None else [None] * len(completions)
        names = tool_names if tool_names is not None else [None] * len(completions)
        return [
            tool_call_score(r, made_calls(text_of(c), tool_format, t or ()))
            for c, r, t in zip(completions, references, names, strict=True)
        ]

    reward.__name__ = spec.label
    return reward


def _builtin(spec: RewardSpec) -> Callable[..., list[float | None]]:
    def reward(
        completions: Sequence[Any], reference: Sequence[str | None] | None = None, **_: Any
    ) -> list[float | None]:
        references = reference if reference is not None else [None] * len(completions)
        return [score(spec, text_of(c), r) for c, r in zip(completions, references, strict=True)]

    reward.__name__ = spec.label
    return reward


def _user(spec: RewardSpec) -> Callable[..., list[float | None]]:
    assert spec.function is not None
    function = import_function(spec.function, spec.label)
    takes_any = takes_kwargs(function)

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        reference: Sequence[str | None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        texts = [text_of(c) for c in completions]
        references = list(reference) if reference is not None else [None] * len(texts)
        extra = {k: v for k, v in columns.items() if k not in _TRL_ONLY} if takes_any else {}
        values = function(completions=texts, prompts=list(prompts), reference=references, **extra)
        return _checked(values, len(texts), spec)

    reward.__name__ = spec.label
    return reward


def _checked(values: Any, expected: int, spec: RewardSpec) -> list[float | None]:
    """The user's rewards as floats; a `TrainingError` naming the function when they are not
    one number (or None) per completion."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TrainingError(
            f"reward {spec.function}: returned {type(values).__name__}, expected a list of "
            f"{expected} floats"
        )
    if len(values) != expected:
        raise TrainingError(
            f"reward {spec.function}: returned {len(values)} values for {expected} completions"
        )
    out: list[float | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise TrainingError(f"reward {spec.function}: {value!r} is not a number")
        out.append(float(value))
    return out
