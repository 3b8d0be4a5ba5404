"""Synthetic SFT and preference generation over fake engines and scorers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from largeforge.application.generation import (
    GeneratePreferenceData,
    GenerateSftData,
    clean_task,
)
from largeforge.domain import FinishReason, Message, Role, SamplingParams
from largeforge.domain.datasets import PromptExample
from largeforge.domain.formats import DatasetFormat, parse_row, to_row
from largeforge.domain.generation import TokenStep
from largeforge.domain.validation import check_record
from tests.fakes import FakeInferenceEngine


class ScriptedEngine(FakeInferenceEngine):
    """Replies from a script, in order, recording every conversation it was asked about."""

    def __init__(self, replies: Sequence[str]) -> None:
        super().__init__("scripted", context_window=4096)
        self.replies = list(replies)
        self.chats: list[tuple[Message, ...]] = []

    def render_chat(self, messages: Sequence[Message], tools: Sequence[object] = ()) -> list[int]:
        self.chats.append(tuple(messages))
        return super().render_chat(messages)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        yield TokenStep(0, self.replies.pop(0), None, FinishReason.STOP)


class LengthScorer:
    async def score(self, prompt: Sequence[Message], response: str) -> float:
        return float(len(response))


SEEDS = [PromptExample((Message(Role.USER, f"Explain topic {i}."),)) for i in range(5)]


def test_clean_task_takes_the_first_line_without_labels() -> None:
    assert clean_task('\n  1. "Explain recursion."\nmore') == "Explain recursion."
    assert clean_task("- New task: sort a list") == "New task: sort a list"
    assert clean_task("Task 3: Define a closure") == "Define a closure"
    assert clean_task("   \n  ") == ""


def test_sft_generation_asks_for_a_task_then_its_answer() -> None:
    engine = ScriptedEngine(["- Explain generators.", "Generators yield values lazily."])
    result = asyncio.run(GenerateSftData(engine, seed=1).execute(SEEDS, count=1))
    (record,) = result.records
    assert record.conversation.messages == (
        Message(Role.USER, "Explain generators."),
        Message(Role.ASSISTANT, "Generators yield values lazily."),
    )
    task_prompt = engine.chats[0][0].content
    assert task_prompt.count("- Explain topic") == 3  # three seed shots
    assert engine.chats[1] == (Message(Role.USER, "Explain generators."),)
    check_record(parse_row(to_row(record, DatasetFormat.MESSAGES), DatasetFormat.MESSAGES))


def test_sft_generation_rejects_duplicates_and_empty_answers_and_counts_them() -> None:
    engine = ScriptedEngine(
        ["Explain topic 0.", "   ", "Explain loops.", "", "Explain loops.", "Loops repeat."]
    )
    progress: list[int] = []
    result = asyncio.run(
        GenerateSftData(engine).execute(SEEDS, count=1, max_attempts=5, progress=progress.append)
    )
    assert [r.conversation.messages[0].content for r in result.records] == ["Explain loops."]
    assert result.rejected == {"duplicate": 1, "empty_task": 1, "empty_assistant": 1}
    assert result.attempts == 4
    assert progress == [1]


def test_sft_generation_stops_after_max_attempts() -> None:
    engine = ScriptedEngine([""] * 10)
    result = asyncio.run(GenerateSftData(engine).execute(SEEDS, count=3, max_attempts=2))
    assert result.records == []
    assert result.attempts == 2


def test_preference_pairs_take_the_best_and_worst_scored_answers() -> None:
    engine = ScriptedEngine(["short", "the longest answer", "medium one", "x"])
    prompt = (Message(Role.USER, "Say something"),)
    result = asyncio.run(
        GeneratePreferenceData(engine, LengthScorer(), samples=4).execute([prompt])
    )
    (pair,) = result.records
    assert pair.prompt == prompt
    assert pair.chosen == (Message(Role.ASSISTANT, "the longest answer"),)
    assert pair.rejected == (Message(Role.ASSISTANT, "x"),)
    row = {
        "prompt": [m.as_dict() for m in pair.prompt],
        "chosen": [m.as_dict() for m in pair.chosen],
        "rejected": [m.as_dict() for m in pair.rejected],
    }
    check_record(parse_row(row, DatasetFormat.PREFERENCE))


def test_prompts_without_two_distinct_answers_are_counted_not_paired() -> None:
    engine = ScriptedEngine(["same", "same", "", "a", "b"])
    prompts = [(Message(Role.USER, "p1"),), (Message(Role.USER, "p2"),)]
    scorer = LengthScorer()
    generator = GeneratePreferenceData(engine, scorer, samples=2)
    result = asyncio.run(generator.execute(prompts[:1]))
    assert result.records == []
    assert result.rejected == {"too_few_distinct_answers": 1}
    generator = GeneratePreferenceData(ScriptedEngine(["a", "bb"]), scorer, samples=2, min_margin=5)
    assert asyncio.run(generator.execute(prompts[1:])).rejected == {"margin_too_small": 1}
