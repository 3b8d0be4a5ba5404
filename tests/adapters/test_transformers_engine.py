"""TransformersInferenceEngine on a tiny random model: usage, limits, stops, seeds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from largeforge.adapters.hf.inference import TransformersInferenceEngine, _apply_stop
from largeforge.domain import (
    ContextLengthExceededError,
    FinishReason,
    Message,
    Role,
    SamplingParams,
)

MESSAGES = (Message(Role.USER, "Tell me a story about a robot."),)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> TransformersInferenceEngine:
    return TransformersInferenceEngine(str(tiny_model_dir), "tiny", device="cpu", max_model_len=128)


def test_usage_counts_are_exact(engine: TransformersInferenceEngine) -> None:
    completion = asyncio.run(engine.chat(MESSAGES, SamplingParams(max_tokens=5, temperature=0)))
    prompt_ids = engine.render_prompt(MESSAGES)
    assert completion.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= completion.usage.completion_tokens <= 5
    if completion.finish_reason is FinishReason.LENGTH:
        assert completion.usage.completion_tokens == 5


def test_prompt_is_rendered_with_the_chat_template(engine: TransformersInferenceEngine) -> None:
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(engine._tokenizer.name_or_path).decode(
        engine.render_prompt(MESSAGES)
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nTell me a story about a robot.<|im_end|>" in text


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(
    engine: TransformersInferenceEngine,
) -> None:
    greedy = SamplingParams(max_tokens=8, temperature=0)
    assert asyncio.run(engine.chat(MESSAGES, greedy)) == asyncio.run(engine.chat(MESSAGES, greedy))
    seeded = SamplingParams(max_tokens=8, temperature=1.0, seed=7)
    first = asyncio.run(engine.chat(MESSAGES, seeded))
    assert asyncio.run(engine.chat(MESSAGES, seeded)) == first


def test_context_window_is_enforced_with_counts(engine: TransformersInferenceEngine) -> None:
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 128") as info:
        asyncio.run(engine.chat(MESSAGES, SamplingParams(max_tokens=500)))
    assert info.value.param == "messages"


def test_concurrent_requests_are_all_answered(engine: TransformersInferenceEngine) -> None:
    async def many() -> list[object]:
        params = SamplingParams(max_tokens=4, temperature=0)
        return await asyncio.gather(*(engine.chat(MESSAGES, params) for _ in range(4)))

    results = asyncio.run(many())
    assert len({r.text for r in results}) == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("hello world. bye", (".",), ("hello world", True)),
        ("abc", ("x",), ("abc", False)),
        ("a END b STOP", ("STOP", "END"), ("a ", True)),
        ("abc", ("",), ("abc", False)),
    ],
)
def test_stop_sequences_cut_at_the_earliest(
    text: str, stop: tuple[str, ...], expected: tuple[str, bool]
) -> None:
    assert _apply_stop(text, stop) == expected
