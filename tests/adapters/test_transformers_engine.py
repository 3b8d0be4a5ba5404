"""TransformersInferenceEngine on a tiny random model: batching, sampling, logprobs, LoRA.

Batching tests watch the engine's forward passes through its `on_step` hook and hold the
scheduler between steps (`StepGate`), so which request joins when does not depend on timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from largeforge.adapters.hf.batching import BatchRow, BatchStep
from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.adapters.hf.sampling import IncrementalDecoder
from largeforge.application.ports import EngineLoad
from largeforge.application.serving import TextGeneration
from largeforge.domain import FinishReason, Message, Role, SamplingParams
from largeforge.domain.errors import EngineOverloadedError, EngineUnavailableError
from largeforge.domain.generation import ChatRequest, TokenStep

MESSAGES = (Message(Role.USER, "Tell me a story about a robot."),)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersInferenceEngine]:
    # fp32: these tests compare with fp32 transformers references exactly (bf16 is compared
    # with fp32 in test_bf16_serving.py).
    engine = TransformersInferenceEngine(
        str(tiny_model_dir),
        "tiny",
        device="cpu",
        dtype="float32",
        max_model_len=256,
        max_num_seqs=8,
    )
    yield engine
    engine.close()


def prompt(engine: TransformersInferenceEngine, text: str) -> list[int]:
    return engine.render_chat((Message(Role.USER, text),))


async def tokens(
    engine: Any, ids: Sequence[int], params: SamplingParams, adapter: str | None = None
) -> list[int]:
    return [step.token_id async for step in engine.generate(ids, params, adapter)]


def reference_greedy(model: Any, ids: Sequence[int], count: int) -> list[int]:
    """`count` greedy tokens from one sequence alone, recomputed from scratch each step."""
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(count):
            logits = model(input_ids=torch.tensor([[*ids, *out]])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
    return out


def in_flight(engine: TransformersInferenceEngine) -> int:
    load = engine.load()
    return load.waiting + load.running


async def until(condition: Callable[[], bool], within: float = 60.0) -> None:
    """Wait for the scheduler thread to change what `condition` observes."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the engine never reached the awaited state"
        await asyncio.sleep(0.001)


class StepGate:
    """An `on_step` hook: records every forward pass and holds the scheduler after each decode
    step until the test resumes it (one step) or opens it (for good)."""

    def __init__(self) -> None:
        self.steps: list[BatchStep] = []
        self._cond = threading.Condition()
        self._paused = False
        self._open = False

    def __call__(self, step: BatchStep) -> None:
        with self._cond:
            self.steps.append(step)
            if step.phase != "decode" or self._open:
                return
            self._paused = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._paused or self._open, timeout=120)

    def wait_paused(self) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._paused or self._open, timeout=120)

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


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


def test_staggered_requests_share_decode_steps_and_match_unbatched_greedy(
    tiny_model_dir: Path,
) -> None:
    """Each request joins while the earlier ones are decoding (the scheduler is held between
    steps until it has arrived); from then on they all run in the same forward passes."""
    gate = StepGate()
    staggered = TransformersInferenceEngine(
        str(tiny_model_dir), "tiny", device="cpu", dtype="float32", max_num_seqs=8, on_step=gate
    )
    prompts = [prompt(staggered, "hi " * (3 * i + 1) + "there") for i in range(6)]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)

    async def stagger() -> list[list[int]]:
        tasks = []
        for i, ids in enumerate(prompts):
            tasks.append(asyncio.create_task(tokens(staggered, ids, params)))
            await until(lambda: in_flight(staggered) == len(tasks))
            if i:
                gate.resume()  # the newcomer is prefilled, then decodes with the others
            await asyncio.to_thread(gate.wait_paused)
        gate.open()
        return list(await asyncio.gather(*tasks))

    try:
        batched = asyncio.run(stagger())
    finally:
        gate.open()
        staggered.close()
    expected_start = []
    for i in range(len(prompts)):
        expected_start += [("prefill", (i,)), ("decode", tuple(range(i + 1)))]
    composition = [(step.phase, step.serials) for step in gate.steps]
    assert composition[: len(expected_start)] == expected_start
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for ids, got in zip(prompts, batched, strict=True):
        assert got == reference_greedy(model, ids, 12)  # exactly 12 tokens each


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
        assert in_flight(engine) == 1
        await stream.aclose()
        await until(lambda: in_flight(engine) == 0)

    asyncio.run(abandon())
    assert engine.load() == EngineLoad(waiting=0, running=0)


@pytest.fixture
def held(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[Held]:
    """An engine whose scheduler stops after its first decode step until the test opens it."""
    max_num_seqs, max_queue = request.param
    gate = StepGate()
    busy = TransformersInferenceEngine(
        str(tiny_model_dir), "t", max_num_seqs=max_num_seqs, max_queue=max_queue, on_step=gate
    )
    try:
        yield Held(busy, gate, prompt(busy, "Busy."))
    finally:
        gate.open()
        busy.close()


@dataclass
class Held:
    engine: TransformersInferenceEngine
    gate: StepGate
    ids: list[int]

    async def start(self, count: int) -> list[asyncio.Task[list[int]]]:
        """Submit `count` requests (8 tokens each) while the scheduler is held between steps."""
        params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
        first = in_flight(self.engine)
        tasks = [asyncio.create_task(tokens(self.engine, self.ids, params)) for _ in range(count)]
        await until(lambda: in_flight(self.engine) == first + count)
        return tasks

    async def refused(self) -> EngineOverloadedError:
        with pytest.raises(EngineOverloadedError) as info:
            await anext(self.engine.generate(self.ids, SamplingParams(max_tokens=8)))
        return info.value


@pytest.mark.parametrize("held", [(3, 0)], indirect=True)
def test_no_waiting_line_admits_a_burst_while_slots_are_free(held: Held) -> None:
    async def burst() -> list[list[int]]:
        tasks = await held.start(1)
        await asyncio.to_thread(held.gate.wait_paused)  # one running, the scheduler held
        tasks += await held.start(2)  # a burst between two steps: slots are free, so admitted
        assert held.engine.load() == EngineLoad(waiting=0, running=3)
        assert "no waiting line" in str(await held.refused())  # every slot is taken now
        held.gate.open()
        return list(await asyncio.gather(*tasks))

    assert [len(got) for got in asyncio.run(burst())] == [8, 8, 8]


@pytest.mark.parametrize("held", [(2, 1)], indirect=True)
def test_max_queue_counts_only_requests_waiting_for_a_slot(held: Held) -> None:
    async def crowd() -> list[list[int]]:
        tasks = await held.start(2)
        await asyncio.to_thread(held.gate.wait_paused)
        assert held.engine.load() == EngineLoad(waiting=0, running=2)
        tasks += await held.start(1)  # two running do not fill a line of one: this one waits
        assert held.engine.load() == EngineLoad(waiting=1, running=2)
        assert "1 requests are waiting (queue size 1)" in str(await held.refused())
        held.gate.open()
        return list(await asyncio.gather(*tasks))

    assert [len(got) for got in asyncio.run(crowd())] == [8, 8, 8]


@pytest.mark.parametrize("held", [(1, 1)], indirect=True)
def test_a_waiting_request_whose_client_left_frees_its_place_in_line_at_once(held: Held) -> None:
    async def leave() -> list[list[int]]:
        tasks = await held.start(1)
        await asyncio.to_thread(held.gate.wait_paused)  # the only slot taken, the scheduler held
        (waiting,) = await held.start(1)
        assert held.engine.load() == EngineLoad(waiting=1, running=1)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert held.engine.load() == EngineLoad(waiting=0, running=1)  # before any step
        tasks += await held.start(1)  # so the line has room again
        held.gate.open()
        return list(await asyncio.gather(*tasks))

    assert [len(got) for got in asyncio.run(leave())] == [8, 8]


def test_a_closing_engine_answers_unavailable_not_overloaded(tiny_model_dir: Path) -> None:
    closing = TransformersInferenceEngine(str(tiny_model_dir), "t", max_num_seqs=1)
    ids = prompt(closing, "Busy.")
    endless = SamplingParams(max_tokens=100_000, temperature=0, ignore_eos=True)

    async def shut_down() -> None:
        running = closing.generate(ids, endless)
        await anext(running)  # holds the only slot
        waiting = asyncio.create_task(tokens(closing, ids, endless))
        await until(lambda: closing.load().waiting == 1)
        await asyncio.to_thread(closing.close)
        for pending in (tokens_of(running), waiting):
            with pytest.raises(EngineUnavailableError, match="shut down"):
                await pending
        with pytest.raises(EngineUnavailableError, match="shutting down"):
            await tokens(closing, ids, endless)

    asyncio.run(shut_down())


async def tokens_of(stream: AsyncIterator[TokenStep]) -> list[int]:
    return [step.token_id async for step in stream]


def test_base_and_adapter_rows_share_forward_passes_and_keep_their_own_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    from tests.support import build_tiny_adapter

    adapter_dir = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    gate = StepGate()
    both = TransformersInferenceEngine(
        str(tiny_model_dir),
        "tiny",
        dtype="float32",
        adapters={"style": str(adapter_dir)},
        on_step=gate,
    )
    ids = prompt(both, "Which model am I?")
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)

    async def mixed() -> list[list[int]]:
        first = [asyncio.create_task(tokens(both, ids, params))]  # serial 0: the base model
        await asyncio.to_thread(gate.wait_paused)
        late = [
            asyncio.create_task(tokens(both, ids, params, "style")),  # serial 1
            asyncio.create_task(tokens(both, ids, params)),  # serial 2: base again
        ]
        await until(lambda: in_flight(both) == 3)
        gate.open()
        return list(await asyncio.gather(*first, *late))

    try:
        assert both.adapters == ("style",)
        base_a, style, base_b = asyncio.run(mixed())
        alone = asyncio.run(tokens(both, ids, params, "style"))
    finally:
        gate.open()
        both.close()
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected_base = reference_greedy(base_model, ids, 8)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter_dir)
    ).eval()
    expected_style = reference_greedy(adapted, ids, 8)
    assert expected_style != expected_base  # the adapter changes the output
    assert style == expected_style == alone
    assert base_a == base_b == expected_base
    base, lora, base_b = BatchRow(0, None), BatchRow(1, "style"), BatchRow(2, None)
    assert [(step.phase, step.rows) for step in gate.steps[:10]] == [
        ("prefill", (base,)),
        ("decode", (base,)),
        ("prefill", (lora, base_b)),  # one prefill pass for an adapter row and a base row
        *[("decode", (base, lora, base_b))] * 6,  # base, adapter and base in every pass
        ("decode", (lora, base_b)),
    ]


def test_incremental_decoding_joins_to_the_full_decode(engine: TransformersInferenceEngine) -> None:
    text = "naïve café — 世界 🎉 done"
    ids = engine.tokenize(text)
    decoder = IncrementalDecoder(engine._tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == engine.decode(ids) == text
