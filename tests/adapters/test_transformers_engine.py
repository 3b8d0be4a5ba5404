"""TransformersInferenceEngine on a tiny random model: batching, sampling, logprobs, LoRA."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.adapters.hf.sampling import IncrementalDecoder
from largeforge.application.serving import TextGeneration
from largeforge.domain import FinishReason, Message, Role, SamplingParams
from largeforge.domain.errors import EngineOverloadedError
from largeforge.domain.generation import ChatRequest

MESSAGES = (Message(Role.USER, "Tell me a story about a robot."),)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersInferenceEngine]:
    engine = TransformersInferenceEngine(
        str(tiny_model_dir), "tiny", device="cpu", max_model_len=256, max_num_seqs=8
    )
    yield engine
    engine.close()


def prompt(engine: TransformersInferenceEngine, text: str) -> list[int]:
    return engine.render_chat((Message(Role.USER, text),))


async def tokens(
    engine: Any, ids: Sequence[int], params: SamplingParams, adapter: str | None = None
) -> list[int]:
    return [step.token_id async for step in engine.generate(ids, params, adapter)]


def direct_greedy(model_dir: Path, ids: Sequence[int], count: int) -> list[int]:
    """Reference: transformers `generate` with one sequence and no batching."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([list(ids)]),
            max_new_tokens=count,
            min_new_tokens=count,
            do_sample=False,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        )
    return [int(t) for t in out[0, len(ids) :]]


def test_usage_counts_are_exact(engine: TransformersInferenceEngine) -> None:
    service = TextGeneration([engine])
    request = ChatRequest("tiny", MESSAGES, SamplingParams(max_tokens=5, temperature=0))
    completion = asyncio.run(service.chat(request))
    assert completion.usage.prompt_tokens == len(engine.render_chat(MESSAGES))
    assert 1 <= completion.usage.completion_tokens <= 5
    if completion.finish_reason is FinishReason.LENGTH:
        assert completion.usage.completion_tokens == 5


def test_prompt_is_rendered_with_the_chat_template(engine: TransformersInferenceEngine) -> None:
    text = engine.decode(engine.render_chat(MESSAGES))
    assert text.endswith("assistant\n")
    assert "user\nTell me a story about a robot." in text


def test_batched_sequences_joining_at_different_steps_match_unbatched_greedy(
    engine: TransformersInferenceEngine, tiny_model_dir: Path
) -> None:
    prompts = [prompt(engine, "hi " * (3 * i + 1) + "there") for i in range(6)]
    greedy = SamplingParams(max_tokens=12, temperature=0)

    async def staggered() -> list[list[int]]:
        async def late(i: int) -> list[int]:
            await asyncio.sleep(0.02 * i)  # joins a batch that is already decoding
            return await tokens(engine, prompts[i], greedy)

        return await asyncio.gather(*(late(i) for i in range(len(prompts))))

    batched = asyncio.run(staggered())
    for ids, got in zip(prompts, batched, strict=True):
        expected = direct_greedy(tiny_model_dir, ids, 12)
        assert got == expected[: len(got)]


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(
    engine: TransformersInferenceEngine,
) -> None:
    ids = prompt(engine, "Sample something.")
    seeded = SamplingParams(max_tokens=10, temperature=1.0, seed=11)
    first = asyncio.run(tokens(engine, ids, seeded))
    assert asyncio.run(tokens(engine, ids, seeded)) == first
    other = SamplingParams(max_tokens=10, temperature=1.0, seed=12)
    assert asyncio.run(tokens(engine, ids, other)) != first
    top1 = SamplingParams(max_tokens=10, temperature=1.0, top_k=1, seed=3)
    greedy = SamplingParams(max_tokens=10, temperature=0)
    assert asyncio.run(tokens(engine, ids, top1)) == asyncio.run(tokens(engine, ids, greedy))


def test_frequency_penalty_discourages_repeats(engine: TransformersInferenceEngine) -> None:
    ids = prompt(engine, "Repeat after me.")
    plain = asyncio.run(tokens(engine, ids, SamplingParams(max_tokens=24, temperature=0)))
    penalized = SamplingParams(max_tokens=24, temperature=0, frequency_penalty=2.0)
    varied = asyncio.run(tokens(engine, ids, penalized))
    assert len(set(varied)) > len(set(plain))


def test_logprobs_match_a_direct_forward_pass(
    engine: TransformersInferenceEngine, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    ids = prompt(engine, "Score me.")

    async def steps() -> list[Any]:
        params = SamplingParams(max_tokens=3, temperature=0, logprobs=5)
        return [s async for s in engine.generate(ids, params)]

    generated = asyncio.run(steps())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    full = ids + [s.token_id for s in generated]
    with torch.inference_mode():
        logits = model(torch.tensor([full])).logits[0].float()
    reference = torch.log_softmax(logits, dim=-1)
    for offset, step in enumerate(generated):
        row = reference[len(ids) - 1 + offset]
        assert step.logprob.logprob == pytest.approx(float(row[step.token_id]), abs=1e-4)
        assert len(step.logprob.top) == 5
        assert step.logprob.top[0][1] == pytest.approx(float(row.max()), abs=1e-4)
    scored = asyncio.run(engine.prompt_logprobs(full, 2))
    assert scored[0].logprob is None
    for position in range(1, len(full)):
        expected = float(reference[position - 1, full[position]])
        assert scored[position].logprob == pytest.approx(expected, abs=1e-4)


def test_a_closed_stream_frees_its_slot(engine: TransformersInferenceEngine) -> None:
    ids = prompt(engine, "Go on forever.")

    async def abandon() -> None:
        stream = engine.generate(ids, SamplingParams(max_tokens=200, temperature=0))
        await anext(stream)
        assert engine.load().running == 1
        await stream.aclose()
        for _ in range(100):
            if engine.load().running == 0:
                return
            await asyncio.sleep(0.01)

    asyncio.run(abandon())
    assert engine.load().running == 0


def test_full_queue_refuses_new_work(tiny_model_dir: Path) -> None:
    small = TransformersInferenceEngine(str(tiny_model_dir), "t", max_num_seqs=1, max_queue=1)
    try:
        ids = prompt(small, "Busy.")

        async def crowd() -> None:
            params = SamplingParams(max_tokens=200, temperature=0)
            running = small.generate(ids, params)
            await anext(running)  # holds the only batch slot
            waiting = asyncio.ensure_future(tokens(small, ids, params))
            await asyncio.sleep(0.05)
            with pytest.raises(EngineOverloadedError, match="queue size 1"):
                await tokens(small, ids, params)
            waiting.cancel()
            await running.aclose()

        asyncio.run(crowd())
    finally:
        small.close()


def test_lora_adapters_are_served_beside_the_base_in_one_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.support import build_tiny_adapter

    adapter_dir = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    both = TransformersInferenceEngine(
        str(tiny_model_dir), "tiny", adapters={"style": str(adapter_dir)}
    )
    try:
        assert both.adapters == ("style",)
        ids = prompt(both, "Which model am I?")
        greedy = SamplingParams(max_tokens=8, temperature=0)
        alone_base = asyncio.run(tokens(both, ids, greedy))
        alone_style = asyncio.run(tokens(both, ids, greedy, "style"))
        assert alone_base != alone_style

        async def mixed() -> list[list[int]]:
            return await asyncio.gather(
                tokens(both, ids, greedy), tokens(both, ids, greedy, "style")
            )

        assert asyncio.run(mixed()) == [alone_base, alone_style]
        assert alone_base == direct_greedy(tiny_model_dir, ids, 8)[: len(alone_base)]
    finally:
        both.close()


def test_incremental_decoding_joins_to_the_full_decode(engine: TransformersInferenceEngine) -> None:
    text = "naïve café — 世界 🎉 done"
    ids = engine.tokenize(text)
    decoder = IncrementalDecoder(engine._tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == engine.decode(ids) == text
