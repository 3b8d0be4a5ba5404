"""Adapters loaded into a running transformers engine (`adapter_loading`): a base sequence
generating across the load and the unload keeps its own tokens, an adapter's rows use its
weights at once, the last unload gives the plain model back, and loading works again after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.domain import SamplingParams
from largeforge.domain.errors import InvalidRequestError
from tests.adapters.test_transformers_engine import (
    StepGate,
    in_flight,
    prompt,
    reference_greedy,
    tokens,
    until,
)


def test_loading_and_unloading_while_a_base_sequence_generates(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    from tests.support import build_tiny_adapter

    first = build_tiny_adapter(tiny_model_dir, tmp_path / "first", seed=1, rank=8)
    second = build_tiny_adapter(tiny_model_dir, tmp_path / "second", seed=2, rank=4)
    gate = StepGate()
    engine = TransformersInferenceEngine(
        str(tiny_model_dir), "tiny", dtype="float32", adapter_loading=True, on_step=gate
    )
    ids = prompt(engine, "Which model am I?")
    long = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    short = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)

    async def scenario() -> dict[str, list[int]]:
        base = asyncio.create_task(tokens(engine, ids, long))
        await asyncio.to_thread(gate.wait_paused)  # the base sequence is mid-generation
        loading = asyncio.create_task(engine.load_adapter("first", str(first)))
        await until(lambda: in_flight(engine) == 1)
        gate.open()  # the load runs between two of the base sequence's steps
        await loading
        assert engine.adapters == ("first",)
        out = {"first": await tokens(engine, ids, short, "first")}
        await engine.load_adapter("second", str(second))
        out["second"] = await tokens(engine, ids, short, "second")
        await engine.unload_adapter("first")
        out["second_again"] = await tokens(engine, ids, short, "second")
        await engine.unload_adapter("second")  # the last one: the plain model again
        out["base_long"] = await base
        out["base_after"] = await tokens(engine, ids, short)
        await engine.load_adapter("first", str(first))  # loads again after the unwrap
        out["first_again"] = await tokens(engine, ids, short, "first")
        return out

    try:
        out = asyncio.run(scenario())
    finally:
        gate.open()
        engine.close()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected_base = reference_greedy(plain, ids, 12)

    def adapted(path: Path) -> list[int]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        return reference_greedy(PeftModel.from_pretrained(model, str(path)).eval(), ids, 6)

    expected_first, expected_second = adapted(first), adapted(second)
    assert len({tuple(expected_base[:6]), tuple(expected_first), tuple(expected_second)}) == 3
    assert out["base_long"] == expected_base  # unchanged by the loads and unloads around it
    assert out["first"] == out["first_again"] == expected_first
    assert out["second"] == out["second_again"] == expected_second
    assert out["base_after"] == expected_base[:6]


def test_an_engine_started_without_loading_refuses(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.support import build_tiny_adapter

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "a")
    engine = TransformersInferenceEngine(str(tiny_model_dir), "tiny", dtype="float32")
    loading = TransformersInferenceEngine(
        str(tiny_model_dir), "tiny", dtype="float32", adapter_loading=True
    )
    try:
        with pytest.raises(InvalidRequestError, match="--enable-lora"):
            asyncio.run(engine.load_adapter("a", str(adapter)))
        with pytest.raises(InvalidRequestError, match=r"no adapter_config\.json"):
            asyncio.run(loading.load_adapter("a", str(tmp_path)))
        assert loading.adapters == ()
    finally:
        engine.close()
        loading.close()
