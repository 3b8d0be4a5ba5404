"""LargeForge's CPU kernels: the one-row gemv against an exact product, its packing, the linear
layer that routes one row through it, and the one-row decode step against the flat step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.adapters.hf import cpu_kernels
from largeforge.adapters.system.device import cpu_flags

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not cpu_flags() >= cpu_kernels.GEMV_FLAGS, reason="this CPU has no AVX-512 BF16"
)


def kernels() -> Any:
    ops = cpu_kernels.gemv_ops()
    assert ops is not None, "the CPU has AVX-512 BF16 but the kernels did not build"
    return ops


class Counting:
    """The kernels, counting calls of `decode_row` (`steps`), `gemv` (`rows`) and `gemm_tiles`
    (`tiles`)."""

    def __init__(self, ops: Any) -> None:
        self.ops, self.steps, self.rows, self.tiles = ops, 0, 0, 0

    def __getattr__(self, name: str) -> Any:
        self.steps += name == "decode_row"
        self.rows += name == "gemv"
        self.tiles += name == "gemm_tiles"
        return getattr(self.ops, name)


def assert_exact_product(
    multiply: Any, rows: int, out_features: int, in_features: int, biased: bool, seed: int
) -> None:
    """`multiply(x, gemv_pack(weight), bias)` is the exact product rounded once to bf16."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator).to(torch.bfloat16)
    x = torch.randn(rows, in_features, generator=generator).to(torch.bfloat16)
    bias = torch.randn(out_features, generator=generator) if biased else None
    exact = x.double() @ weight.double().T + (0 if bias is None else bias.double())
    got = multiply(x, kernels().gemv_pack(weight), bias)
    assert got.dtype == torch.bfloat16
    assert got.shape == (rows, out_features)
    scale = (x.double().abs() @ weight.double().abs().T).max().item()
    error = (got.double() - exact).abs()
    assert (error <= exact.abs() * 2**-8 + 1e-5 * scale + 1e-6).all()  # one bf16 rounding


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    blocks=st.integers(1, 11),
    pairs=st.integers(1, 40),
    biased=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_gemv_is_the_exact_product_rounded_to_bf16(
    rows: int, blocks: int, pairs: int, biased: bool, seed: int
) -> None:
    assert_exact_product(kernels().gemv, rows, 16 * blocks, 2 * pairs, biased, seed)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 3), inner=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_the_gated_activation_rounds_as_torch_does(rows: int, inner: int, seed: int) -> None:
    """silu(gate) * up in bf16, its exp within an ulp of torch's: at most one bf16 step off,
    and almost always not at all (an exp 0.4 % off changes a third of the values)."""
    generator = torch.Generator().manual_seed(seed)
    gate = (torch.rand(rows, inner, generator=generator) * 40 - 20).to(torch.bfloat16)
    up = torch.randn(rows, inner, generator=generator).to(torch.bfloat16)
    want = torch.nn.functional.silu(gate) * up
    got = kernels().silu_mul(torch.cat([gate, up], dim=-1))
    assert got.shape == want.shape
    assert got.dtype == torch.bfloat16
    steps = (got.view(torch.int16).int() - want.view(torch.int16).int()).abs()
    steps[got == want] = 0  # +0 and -0
    assert steps.max() <= 1
    assert (steps == 0).float().mean() >= 0.98


def tiles() -> Any:
    ops = cpu_kernels.tile_ops()
    if ops is None:
        pytest.skip("this CPU or process has no AMX BF16 tiles")
    return ops


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 16),
    blocks=st.integers(1, 10),
    depth=st.integers(1, 4),
    biased=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_tile_kernel_is_the_exact_product_rounded_to_bf16(
    rows: int, blocks: int, depth: int, biased: bool, seed: int
) -> None:
    assert_exact_product(tiles().gemm_tiles, rows, 16 * blocks, 32 * depth, biased, seed)


def test_the_tile_kernel_refuses_what_it_cannot_take() -> None:
    ops = tiles()
    packed = ops.gemv_pack(torch.randn(32, 64).to(torch.bfloat16))
    assert ops.gemm_tiles(torch.randn(2, 3, 64).to(torch.bfloat16), packed, None).shape == (
        2,
        3,
        32,
    )
    with pytest.raises(RuntimeError, match="1 to 16 rows"):
        ops.gemm_tiles(torch.randn(17, 64).to(torch.bfloat16), packed, None)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        ops.gemm_tiles(
            torch.randn(2, 48).to(torch.bfloat16),
            ops.gemv_pack(torch.randn(32, 48).to(torch.bfloat16)),
            None,
        )


def test_a_prepacked_linear_sends_2_to_16_rows_to_the_tiles() -> None:
    from largeforge.adapters.hf.fast_linear import PrepackedLinear, linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 128).to(torch.bfloat16)
    counting = Counting(tiles())
    fast = PrepackedLinear(layer, batch_hint=4, gemv=kernels(), tiles=counting)
    with torch.inference_mode():
        for rows in (2, 16):
            x = torch.randn(rows, 96).to(torch.bfloat16)
            want = tiles().gemm_tiles(x, fast.vector_packed, fast.vector_bias)
            assert torch.equal(fast(x), want)
            assert torch.allclose(fast(x).float(), layer(x).float(), rtol=2e-2, atol=2e-2)
        assert counting.tiles == 4
        many = torch.randn(17, 96).to(torch.bfloat16)
        assert torch.equal(fast(many), linear(many, fast.packed, fast.bias))  # oneDNN
        assert counting.tiles == 4
    shallow = PrepackedLinear(torch.nn.Linear(80, 64).to(torch.bfloat16), 4, kernels(), tiles())
    assert shallow.vector_packed is not None  # the gemv takes it, the tiles do not
    assert shallow.tile_kernels is None


def test_gemv_keeps_leading_dimensions_and_refuses_what_it_cannot_take() -> None:
    ops = kernels()
    weight = torch.randn(128, 32).to(torch.bfloat16)
    packed = ops.gemv_pack(weight)
    x = torch.randn(1, 1, 32).to(torch.bfloat16)
    assert ops.gemv(x, packed, None).shape == (1, 1, 128)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ops.gemv_pack(torch.randn(100, 32).to(torch.bfloat16))
    with pytest.raises(RuntimeError, match="1 to 4 rows"):
        ops.gemv(torch.randn(5, 32).to(torch.bfloat16), packed, None)
    with pytest.raises(RuntimeError, match="32 features"):
        ops.gemv(torch.randn(1, 30).to(torch.bfloat16), packed, None)


def test_a_prepacked_linear_sends_one_row_through_the_gemv(monkeypatch: pytest.MonkeyPatch) -> None:
    from largeforge.adapters.hf.fast_linear import PrepackedLinear, linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 128).to(torch.bfloat16)
    counting = Counting(kernels())
    fast = PrepackedLinear(layer, batch_hint=4, gemv=counting)
    one, two = torch.randn(1, 96).to(torch.bfloat16), torch.randn(2, 96).to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(fast(one), kernels().gemv(one, fast.vector_packed, fast.vector_bias))
        assert counting.rows == 1
        assert torch.equal(fast(two), linear(two, fast.packed, fast.bias))  # oneDNN
        assert counting.rows == 1
        assert torch.allclose(fast(one).float(), layer(one).float(), rtol=2e-2, atol=2e-2)
    odd = PrepackedLinear(torch.nn.Linear(96, 40).to(torch.bfloat16), 4, gemv=kernels())
    assert odd.vector_packed is None
    assert odd.gemv_kernels is None
    monkeypatch.setenv("LARGEFORGE_CPU_KERNELS", "0")
    cpu_kernels.gemv_ops.cache_clear()
    try:
        assert cpu_kernels.gemv_ops() is None
    finally:
        monkeypatch.delenv("LARGEFORGE_CPU_KERNELS")
        cpu_kernels.gemv_ops.cache_clear()


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with queries and keys scaled up, so that its attention is not nearly
    uniform and the rotary angles change which keys it attends to, and with random biases on
    every projection (each reaches the kernel in its own slot)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.attention_bias = config.mlp_bias = True
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, config=config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4)
            layer.self_attn.k_proj.weight.mul_(4)
            for name, bias in layer.named_parameters():
                if name.endswith(".bias"):
                    bias.copy_(torch.randn(bias.shape, generator=generator))
    out = tmp_path_factory.mktemp("models") / "sharp-llama"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def decode(model_dir: Path, one_row: bool, steps: int) -> tuple[list[Any], Any, Counting]:
    """Steps of the flat decode step after a 20-token prompt, with the one-row kernel or
    without, fed the same tokens either way: the logits, the cache, and the kernels' call
    count."""
    from transformers import DynamicCache

    from largeforge.adapters.hf.batching import _growing_layer
    from largeforge.adapters.hf.decode_step import LlamaDecodeStep
    from largeforge.adapters.hf.inference import _load

    model, _, _ = _load(str(model_dir), "bfloat16", "cpu", {}, 4)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # norm weights other than the initial ones
        for name, weight in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                weight.copy_(1 + 0.5 * torch.randn(weight.shape, generator=generator))
    step = LlamaDecodeStep.for_model(model)
    assert step is not None
    assert step._kernels is not None  # every projection of the tiny model fits the gemv
    counting = Counting(step._kernels)
    step._kernels = counting if one_row else None
    with torch.inference_mode():
        prompt = torch.arange(20)[None] * 37 + 11
        cache = model(input_ids=prompt, past_key_values=DynamicCache(), use_cache=True)
        cache = cache.past_key_values
        cache.layers = [_growing_layer(x.keys, x.values) for x in cache.layers]
        logits = []
        for position in range(20, 20 + steps):
            token = torch.tensor([[(position * 13 + 5) % 1000]])
            logits.append(step(token, None, torch.tensor([[position]]), cache).float())
    return logits, cache, counting


def test_the_one_row_decode_step_follows_the_flat_step(sharp_model_dir: Path) -> None:
    """70 steps (past the cache's spare room): the keys and values it writes in the first
    layer are the flat step's bit for bit, and its logits stay within bf16 rounding of them."""
    steps = 70
    stock, stock_cache, unused = decode(sharp_model_dir, one_row=False, steps=steps)
    mine, cache, counting = decode(sharp_model_dir, one_row=True, steps=steps)
    assert unused.steps == 0
    assert counting.steps == steps  # one call a step
    for layer, theirs in zip(cache.layers, stock_cache.layers, strict=True):
        assert layer.keys.shape == theirs.keys.shape == (1, 2, 20 + steps, 16)
    first, first_stock = cache.layers[0], stock_cache.layers[0]
    assert torch.equal(first.keys[:, :, :21], first_stock.keys[:, :, :21])  # norm, gemv, rope
    assert torch.equal(first.values[:, :, :21], first_stock.values[:, :, :21])
    for got, want in zip(mine, stock, strict=True):
        assert (got - want).abs().max() <= 0.02 * want.abs().max() + 0.01


def test_the_engine_decodes_one_row_with_the_kernel(tiny_model_dir: Path) -> None:
    import asyncio

    from largeforge.adapters.hf.inference import TransformersInferenceEngine
    from largeforge.domain import Message, Role
    from largeforge.domain.generation import SamplingParams

    engine = TransformersInferenceEngine(str(tiny_model_dir), "t", device="cpu", dtype="bfloat16")
    try:
        step = engine._batcher._decode_step
        assert step is not None
        assert step._kernels is not None
        step._kernels = counting = Counting(step._kernels)
        prompt = engine.render_chat((Message(Role.USER, "Tell me about the sea."),))
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)

        async def generate() -> list[int]:
            return [s.token_id async for s in engine.generate(prompt, params)]

        tokens = asyncio.run(generate())
    finally:
        engine.close()
    assert len(tokens) == 12
    assert all(0 <= token < engine.vocab_size for token in tokens)
    assert counting.steps == 11  # the first token comes from the prefill
