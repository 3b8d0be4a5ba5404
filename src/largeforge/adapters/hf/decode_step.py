"""The serving engine's decode step for Llama models, without transformers' module machinery.

A decode step of a small model on a CPU spends about a quarter of its time outside the
matmuls and the attention kernel: module calls, keyword plumbing, per-step mask building and
some twenty small tensor operations per layer. Once the engine has fused and prepacked a Llama
model (`fused_projections`, `fast_linear`), this step runs the same layers with the same
operations in the same order (the model's own embedding, rotary embedding and RMSNorm
modules, its prepacked linears, the serving attention's decode kernel, its KV cache), as one
flat loop: the logits are bit for bit those of the model's forward (tests/adapters/
test_decode_step.py). The 16-row decode forward of SmolLM2-135M went from 35 to 30.5 ms.

A one-row step without a mask (batch-1 decoding) goes further where LargeForge's CPU kernels
are built (`cpu_kernels`) and every projection and the head have their weights: the whole
step after the embedding and the rotary angles is one call of the `decode_row` kernel
(batch-1 step 19-20 to 10-10.5 ms); its logits follow the flat step's within bf16 rounding
instead of bit for bit (tests/adapters/test_cpu_kernels.py).

Built only for a model whose every part is the known shape (`for_model` checks each and
returns None otherwise, so anything else keeps the model's forward): no adapters, no other
attention, no other norm, no logit scaling.
"""

from __future__ import annotations

from typing import Any

import torch

from largeforge.adapters.hf.fast_linear import PrepackedLinear
from largeforge.adapters.hf.fused_projections import rotate
from largeforge.adapters.hf.serving_attention import SERVING_ATTENTION, decode_attention

MODEL_CLASSES = frozenset({"LlamaForCausalLM"})
LAYER_CLASSES = frozenset({"LlamaDecoderLayer"})
NORM_CLASSES = frozenset({"LlamaRMSNorm"})


def _packed(*modules: Any) -> bool:
    return all(isinstance(module, PrepackedLinear) for module in modules)


def _known_layer(layer: Any) -> bool:
    attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    norms = [
        getattr(layer, "input_layernorm", None),
        getattr(layer, "post_attention_layernorm", None),
    ]
    return (
        type(layer).__name__ in LAYER_CLASSES
        and all(type(norm).__name__ in NORM_CLASSES for norm in norms)
        and _packed(getattr(attention, "qkv_proj", None), getattr(attention, "o_proj", None))
        and _packed(getattr(mlp, "gate_up_proj", None), getattr(mlp, "down_proj", None))
    )


class LlamaDecodeStep:
    """One decode step (one new token per row) of a fused, prepacked Llama model."""

    def __init__(self, model: Any) -> None:
        inner = model.model
        self._embed = inner.embed_tokens.forward
        self._rotary = inner.rotary_emb.forward
        self._norm = inner.norm.forward
        self._head = model.lm_head.forward
        self._layers = [
            (
                layer.input_layernorm.forward,
                layer.self_attn.qkv_proj.forward,
                tuple(layer.self_attn.qkv_heads),
                layer.self_attn.head_dim,
                layer.self_attn.scaling,
                layer.self_attn.o_proj.forward,
                layer.post_attention_layernorm.forward,
                layer.mlp.gate_up_proj.forward,
                layer.mlp.down_proj.forward,
            )
            for layer in inner.layers
        ]
        kernels, row_weights = model.lm_head.gemv_kernels, _row_weights(model)
        self._kernels = kernels if kernels is not None and row_weights is not None else None
        self._row_weights = row_weights or ()

    @classmethod
    def for_model(cls, model: Any) -> LlamaDecodeStep | None:
        """The step for `model`, or None where any part of it is not the known shape."""
        inner = getattr(model, "model", None)
        config = getattr(model, "config", None)
        if type(model).__name__ not in MODEL_CLASSES or inner is None or config is None:
            return None
        if getattr(config, "_attn_implementation", None) != SERVING_ATTENTION:
            return None
        if not _packed(getattr(model, "lm_head", None)):
            return None
        if type(getattr(inner, "norm", None)).__name__ not in NORM_CLASSES:
            return None
        if not all(_known_layer(layer) for layer in inner.layers):
            return None
        return cls(model)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        past_key_values: Any,
    ) -> torch.Tensor:
        """Logits [batch, 1, vocab] of the next token for `input_ids` [batch, 1] at
        `position_ids` [batch, 1]; `attention_mask` [batch, keys] (1 for a real key, the new
        token included) or None; the new keys and values are appended to `past_key_values`."""
        hidden = self._embed(input_ids)
        cache = past_key_values.layers
        one_row = self._kernels is not None and attention_mask is None and hidden.shape[0] == 1
        if one_row and all(hasattr(layer, "reserve") for layer in cache):
            return self._one_row(hidden, position_ids, cache)
        cos, sin = (part.unsqueeze(1) for part in self._rotary(hidden, position_ids))
        mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        batch = hidden.shape[0]
        for index, layer in enumerate(self._layers):
            norm_in, qkv, (queries, keys, _), dim, scaling, out, norm_mid, gate_up, down = layer
            x = norm_in(hidden)
            heads = qkv(x).view(batch, 1, -1, dim).transpose(1, 2)
            rotated = rotate(heads[:, : queries + keys], cos, sin)
            key, value = cache[index].update(rotated[:, queries:], heads[:, queries + keys :])
            attended = decode_attention(rotated[:, :queries], key, value, mask, scaling)
            hidden = hidden + out(attended.reshape(batch, 1, -1))
            gate, up = gate_up(norm_mid(hidden)).chunk(2, dim=-1)
            hidden = hidden + down(torch.nn.functional.silu(gate) * up)
        return self._head(self._norm(hidden))

    def _one_row(
        self, hidden: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """One row: the whole step (every layer, the final norm and the head) is one call of
        the `decode_row` CPU kernel, which writes the new keys and values into the layers'
        cache buffers itself."""
        assert self._kernels is not None
        cos, sin = self._rotary(hidden, position_ids)
        reserved = [layer.reserve(1) for layer in cache]
        length = reserved[0][2]
        assert all(room[2] == length for room in reserved), "layers of unequal length"
        keys, values = [room[0] for room in reserved], [room[1] for room in reserved]
        logits: torch.Tensor = self._kernels.decode_row(
            hidden, cos, sin, keys, values, length, *self._row_weights
        )
        for layer in cache:
            layer.advance(1)
        return logits


def _row_weights(model: Any) -> tuple[Any, ...] | None:
    """The `decode_row` kernel's arguments after the cache ones, or None where a projection
    or the head has no gemv weights, a norm is not bf16, or the norms' epsilons differ."""
    inner, head = model.model, model.lm_head
    layers = [_row_layer(layer) for layer in inner.layers]
    norms = [inner.norm] + [
        norm
        for layer in inner.layers
        for norm in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    if any(layer is None for layer in layers) or head.vector_packed is None:
        return None
    if any(norm.weight.dtype != torch.bfloat16 for norm in norms):
        return None
    epsilons = {float(norm.variance_epsilon) for norm in norms[1:]}
    if len(epsilons) != 1:
        return None
    norms_in, norms_mid, *projections = (list(column) for column in zip(*layers, strict=True))
    attention = inner.layers[0].self_attn
    query_heads, key_heads, _ = attention.qkv_heads
    return (
        norms_in,
        norms_mid,
        epsilons.pop(),
        *projections,
        inner.norm.weight.detach().contiguous(),
        float(inner.norm.variance_epsilon),
        head.vector_packed,
        head.vector_bias,
        query_heads,
        key_heads,
        float(attention.scaling),
    )


def _row_layer(layer: Any) -> tuple[Any, ...] | None:
    """A layer's norm weights and gemv-packed projections with their biases (None where a
    projection has no gemv weights)."""
    attention, mlp = layer.self_attn, layer.mlp
    projections = [attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj]
    if any(projection.vector_packed is None for projection in projections):
        return None
    norms = [layer.input_layernorm, layer.post_attention_layernorm]
    weights: list[Any] = [norm.weight.detach().contiguous() for norm in norms]
    for projection in projections:
        weights += [projection.vector_packed, projection.vector_bias]
    return tuple(weights)
