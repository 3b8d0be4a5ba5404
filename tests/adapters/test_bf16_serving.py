"""bf16 serving on a CPU with bf16 instructions: prepacked linears compute what `nn.Linear`
computes, only plain linears are replaced (LoRA keeps its layers), and the bf16 engine scores
tokens as the fp32 one does within bf16's rounding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from largeforge.adapters.hf.fast_linear import PrepackedLinear, can_prepack, prepack_linears
from largeforge.adapters.hf.fused_projections import fuse_projections
from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.domain import Message, Role

pytestmark = pytest.mark.skipif(
    not can_prepack(torch.bfloat16, "cpu"), reason="this CPU or torch build has no oneDNN bf16"
)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5)])
def test_a_prepacked_linear_computes_the_linear(bias: bool, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape, 96, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = linear(x).float()
        got = PrepackedLinear(linear, batch_hint=4)(x).float()
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-2, rtol=2e-2)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_only_bf16_plain_linears_are_replaced() -> None:
    from peft import LoraConfig, get_peft_model

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(16, 16)
            self.head = torch.nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.q_proj(x))

    torch.manual_seed(0)
    fp32 = Block()
    assert prepack_linears(fp32, batch_hint=1) == 0  # fp32 stays with its own kernels
    model = get_peft_model(Block().to(torch.bfloat16), LoraConfig(r=4, target_modules=["q_proj"]))
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    with torch.inference_mode():
        before = model(x).float()
        assert prepack_linears(model, batch_hint=2) == 1  # the head only
        after = model(x).float()
    lora_layer = model.base_model.model.q_proj
    assert type(lora_layer.base_layer) is torch.nn.Linear
    assert isinstance(model.base_model.model.head, PrepackedLinear)
    assert torch.allclose(before, after, atol=2e-2, rtol=2e-2)


def _prompt_scores(engine: TransformersInferenceEngine, text: str) -> list[tuple[float, str]]:
    ids = engine.render_chat((Message(Role.USER, text),))
    entries = asyncio.run(engine.prompt_logprobs(ids, 1))[1:]
    return [(e.logprob or 0.0, e.top[0][0]) for e in entries]


def test_the_bf16_engine_prepacks_and_scores_as_fp32_does(tiny_model_dir: Path) -> None:
    fp32 = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu", dtype="float32")
    bf16 = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu", dtype="bfloat16")
    try:
        linears = [m for m in bf16._model.modules() if isinstance(m, PrepackedLinear)]
        assert len(linears) == 2 * 4 + 1  # qkv, o, gate_up, down per layer; the head
        assert not any(isinstance(m, PrepackedLinear) for m in fp32._model.modules())
        text = "Tell me about the sea, the wind and the stars."
        exact, rounded = _prompt_scores(fp32, text), _prompt_scores(bf16, text)
        assert len(exact) == len(rounded) > 10
        for (want, _), (got, _) in zip(exact, rounded, strict=True):
            assert got == pytest.approx(want, abs=0.05)
    finally:
        fp32.close()
        bf16.close()


def test_fused_projections_compute_what_the_layers_computed(tiny_model_dir: Path) -> None:
    """Prefill then two cached decode steps: the fused model's logits are the original's."""
    from transformers import AutoModelForCausalLM, DynamicCache

    def logits(model: torch.nn.Module) -> list[torch.Tensor]:
        torch.manual_seed(1)
        ids = torch.randint(0, 1000, (2, 7))
        cache = DynamicCache()
        with torch.inference_mode():
            out = [model(input_ids=ids, past_key_values=cache, use_cache=True).logits]
            for step in range(2):
                position = torch.full((2, 1), 7 + step)
                token = out[-1][:, -1:].argmax(-1)
                kwargs = {"past_key_values": cache, "position_ids": position, "use_cache": True}
                out.append(model(input_ids=token, **kwargs).logits)
        return out

    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    fused = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert fuse_projections(fused) == 2 * 2  # each layer's attention and MLP
    attention = fused.model.layers[0].self_attn
    assert not hasattr(attention, "q_proj")
    assert attention.qkv_proj.out_features == sum(attention.qkv_heads) * attention.head_dim
    for want, got in zip(logits(original), logits(fused), strict=True):
        assert torch.allclose(want, got, atol=1e-5)
