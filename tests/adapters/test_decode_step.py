"""The flat decode step: bit for bit the model's own forward, on the models it knows only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.hf.fast_linear import can_prepack

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not can_prepack(torch.bfloat16, "cpu"), reason="this CPU or torch build has no oneDNN bf16"
)


def served(model_dir: Path, dtype: str = "bfloat16") -> Any:
    """The model as the engine loads it (fused, prepacked, serving attention)."""
    from largeforge.adapters.hf.inference import _load

    model, _, _ = _load(str(model_dir), dtype, "cpu", {}, 4)
    return model


def prefilled(model: Any, prompts: list[list[int]]) -> tuple[Any, Any]:
    """The batch's cache (with room to grow, as the engine keeps it) and its mask."""
    from transformers import DynamicCache

    from largeforge.adapters.hf.batching import _growing_layer

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=DynamicCache(),
        use_cache=True,
    )
    cache = out.past_key_values
    cache.layers = [_growing_layer(x.keys, x.values) for x in cache.layers]
    return cache, mask


@pytest.mark.parametrize(
    "prompts", [[[5, 6, 7], [11, 12, 13, 14, 15, 16], [21, 22]], [[9, 8, 7, 6]]]
)
def test_its_logits_and_cache_are_the_forwards_bit_for_bit(
    tiny_model_dir: Path, prompts: list[list[int]]
) -> None:
    from largeforge.adapters.hf.decode_step import LlamaDecodeStep

    model = served(tiny_model_dir)
    step = LlamaDecodeStep.for_model(model)
    assert step is not None
    step._kernels = None  # one row's own kernel: tests/adapters/test_cpu_kernels.py
    with torch.inference_mode():
        (stock, mask), (flat, _) = prefilled(model, prompts), prefilled(model, prompts)
        positions = torch.tensor([[len(p)] for p in prompts])
        tokens = torch.tensor([[100 + row] for row in range(len(prompts))])
        for _ in range(3):
            mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
            padded = mask if bool((mask == 0).any()) else None  # as the engine passes it
            inputs = {"input_ids": tokens, "attention_mask": padded, "position_ids": positions}
            want = model(**inputs, past_key_values=stock, use_cache=True, logits_to_keep=1)
            got = step(**inputs, past_key_values=flat)
            assert got.shape == want.logits.shape
            assert torch.equal(got, want.logits)
            tokens, positions = got[:, -1].argmax(-1, keepdim=True), positions + 1
        for mine, theirs in zip(flat.layers, stock.layers, strict=True):
            assert torch.equal(mine.keys, theirs.keys)
            assert torch.equal(mine.values, theirs.values)


def test_models_of_another_shape_keep_their_forward(tiny_model_dir: Path) -> None:
    from largeforge.adapters.hf.decode_step import LlamaDecodeStep

    assert LlamaDecodeStep.for_model(served(tiny_model_dir, "float32")) is None  # not prepacked
    model = served(tiny_model_dir)
    model.set_attn_implementation("sdpa")  # another attention function
    assert LlamaDecodeStep.for_model(model) is None
    model = served(tiny_model_dir)
    model.model.layers[1].post_attention_layernorm = torch.nn.LayerNorm(64)  # another norm
    assert LlamaDecodeStep.for_model(model) is None
    model = served(tiny_model_dir)
    model.model.layers[0].mlp.down_proj = torch.nn.Linear(128, 64)  # an unpacked projection
    assert LlamaDecodeStep.for_model(model) is None


def test_the_engine_decodes_with_it_and_generates_what_the_forward_does(
    tiny_model_dir: Path,
) -> None:
    from largeforge.adapters.hf.inference import TransformersInferenceEngine
    from largeforge.domain import Message, Role
    from largeforge.domain.generation import SamplingParams

    async def texts(engine: TransformersInferenceEngine) -> list[list[int]]:
        async def one(text: str) -> list[int]:
            prompt = engine.render_chat((Message(Role.USER, text),))
            params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
            return [step.token_id async for step in engine.generate(prompt, params)]

        prompts = ["Hi", "Tell me about the sea and the wind.", "Count to three, please."]
        return list(await asyncio.gather(*(one(text) for text in prompts)))

    engine = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu", dtype="bfloat16")
    try:
        step = engine._batcher._decode_step
        assert step is not None
        step._kernels = None  # one row's own kernel: tests/adapters/test_cpu_kernels.py
        calls: list[int] = []

        def counted(**inputs: Any) -> Any:
            calls.append(len(inputs["input_ids"]))
            return step(**inputs)

        engine._batcher._decode_step = counted
        flat = asyncio.run(texts(engine))
        assert len(calls) >= 11
        assert max(calls) == 3
        engine._batcher._decode_step = None  # the model's own forward
        stock = asyncio.run(texts(engine))
    finally:
        engine.close()
    assert flat == stock
    assert all(len(tokens) == 12 for tokens in flat)
    fp32 = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu", dtype="float32")
    try:
        assert fp32._batcher._decode_step is None
    finally:
        fp32.close()
