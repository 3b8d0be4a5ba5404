"""Synthetic data: new SFT pairs from seed tasks, and preference pairs from sampled answers.

Both run over the `InferenceEngine` port, so any served model (local or remote) can generate.
Every candidate is parsed, cleaned, validated and de-duplicated like a dataset row; what is
rejected is counted by reason, never silently dropped.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

import structlog

from largeforge.application.ports import InferenceEngine
from largeforge.application.serving import chat_once
from largeforge.domain.datasets import (
    Conversation,
    Message,
    PreferencePair,
    PromptExample,
    Role,
    SftExample,
)
from largeforge.domain.errors import ConfigError, DatasetError
from largeforge.domain.formats import RowError
from largeforge.domain.generation import SamplingParams
from largeforge.domain.text import clean_text, normalized_key
from largeforge.domain.validation import check_record

log = structlog.get_logger(__name__)

T = TypeVar("T")

Progress = Callable[[int], None]
"""Called with the number of items just completed."""

TASK_PROMPT = (
    "Here are some example tasks a user might give an assistant:\n{examples}\n"
    "Write one new task of the same kind, on a different topic. "
    "Reply with the task only, on one line."
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|task\s*\d*:|new task:)\s*", re.IGNORECASE)


@runtime_checkable
class ResponseScorer(Protocol):
    """Scores a response to a prompt: higher is better."""

    async def score(self, prompt: Sequence[Message], response: str) -> float: ...


@dataclass
class GenerationResult(Generic[T]):
    """What a generator produced, and why candidates were rejected."""

    records: list[T] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    attempts: int = 0


def clean_task(text: str) -> str:
    """The first non-empty line of a model's reply, without bullets, labels or quotes."""
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip().strip("\"'` ")
        if line:
            return line
    return ""


class GenerateSftData:
    """Self-instruct: show a few seed tasks, ask for a new task, then ask for its answer."""

    def __init__(
        self,
        engine: InferenceEngine,
        *,
        shots: int = 3,
        temperature: float = 0.9,
        max_tokens: int = 256,
        seed: int = 0,
    ) -> None:
        self._engine = engine
        self._shots = shots
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._rng = random.Random(seed)
        self._seed = seed

    async def execute(
        self,
        seeds: Sequence[PromptExample],
        count: int,
        *,
        max_attempts: int | None = None,
        progress: Progress | None = None,
    ) -> GenerationResult[SftExample]:
        """Up to `count` new pairs in at most `max_attempts` tries (default 4 per pair); the
        seeds' last user turns are the example tasks."""
        if count < 1:
            raise ConfigError(f"count must be at least 1, got {count}")
        tasks = [s.task for s in seeds if s.task.strip()]
        if not tasks:
            raise DatasetError("no seed tasks: every seed prompt is empty")
        seen = {normalized_key(t) for t in tasks}
        result: GenerationResult[SftExample] = GenerationResult()
        limit = max_attempts if max_attempts is not None else count * 4
        while len(result.records) < count and result.attempts < limit:
            result.attempts += 1
            task = await self._new_task(tasks)
            key = normalized_key(task)
            if not task:
                result.rejected["empty_task"] += 1
                continue
            if key in seen:
                result.rejected["duplicate"] += 1
                continue
            answer = await self._answer(task)
            record = SftExample(
                Conversation((Message(Role.USER, task), Message(Role.ASSISTANT, answer)))
            )
            try:
                check_record(record)
            except RowError as error:
                result.rejected[error.kind] += 1
                continue
            seen.add(key)
            result.records.append(record)
            if progress:
                progress(1)
        log.info(
            "sft_generated",
            kept=len(result.records),
            attempts=result.attempts,
            rejected=dict(result.rejected),
        )
        return result

    async def _new_task(self, tasks: Sequence[str]) -> str:
        shots = self._rng.sample(list(tasks), min(self._shots, len(tasks)))
        prompt = TASK_PROMPT.format(examples="\n".join(f"- {t}" for t in shots))
        params = SamplingParams(
            max_tokens=64, temperature=self._temperature, seed=self._rng.randrange(2**31)
        )
        completion = await chat_once(self._engine, (Message(Role.USER, prompt),), params)
        return clean_task(clean_text(completion.text))

    async def _answer(self, task: str) -> str:
        params = SamplingParams(
            max_tokens=self._max_tokens, temperature=0.3, seed=self._rng.randrange(2**31)
        )
        completion = await chat_once(self._engine, (Message(Role.USER, task),), params)
        return clean_text(completion.text)


class GeneratePreferenceData:
    """Sample several answers per prompt; the best-scored is `chosen`, the worst `rejected`."""

    def __init__(
        self,
        engine: InferenceEngine,
        scorer: ResponseScorer,
        *,
        samples: int = 4,
        temperature: float = 1.0,
        max_tokens: int = 256,
        min_margin: float = 0.0,
        seed: int = 0,
    ) -> None:
        if samples < 2:
            raise ConfigError(f"need at least 2 samples per prompt to form a pair, got {samples}")
        self._engine = engine
        self._scorer = scorer
        self._samples = samples
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._min_margin = min_margin
        self._rng = random.Random(seed)

    async def execute(
        self,
        prompts: Sequence[tuple[Message, ...]],
        *,
        progress: Progress | None = None,
    ) -> GenerationResult[PreferencePair]:
        result: GenerationResult[PreferencePair] = GenerationResult()
        for prompt in prompts:
            result.attempts += 1
            scored = await self._sample_and_score(prompt)
            distinct = {text: score for text, score in scored if text}
            if progress:
                progress(1)
            if len(distinct) < 2:
                result.rejected["too_few_distinct_answers"] += 1
                continue
            ranked = sorted(distinct.items(), key=lambda item: item[1])
            (worst, low), (best, high) = ranked[0], ranked[-1]
            if high - low < self._min_margin:
                result.rejected["margin_too_small"] += 1
                continue
            pair = PreferencePair(
                prompt=prompt,
                chosen=(Message(Role.ASSISTANT, best),),
                rejected=(Message(Role.ASSISTANT, worst),),
            )
            try:
                check_record(pair)
            except RowError as error:
                result.rejected[error.kind] += 1
                continue
            result.records.append(pair)
        log.info(
            "preferences_generated",
            kept=len(result.records),
            prompts=result.attempts,
            rejected=dict(result.rejected),
        )
        return result

    async def _sample_and_score(self, prompt: tuple[Message, ...]) -> list[tuple[str, float]]:
        scored = []
        for _ in range(self._samples):
            params = SamplingParams(
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                seed=self._rng.randrange(2**31),
            )
            text = clean_text((await chat_once(self._engine, prompt, params)).text)
            score = await self._scorer.score(prompt, text) if text else float("-inf")
            scored.append((text, score))
        return scored
