"""Fused projections for serving: one matmul for a layer's q, k and v, one for its gate and up.

A decode step of a small model on a CPU is mostly many small matmuls, each paying a fixed cost
(a oneDNN call, a new output tensor) on top of reading its weights; fusing q/k/v (three calls)
and gate/up (two) leaves four matmuls per layer instead of seven, over the same weight bytes.
The fused modules keep the original forward's arithmetic: the same rotary embedding, cache
update and attention function (transformers' own, from the model's config).

Applied only to module classes whose forward is known to be exactly this shape (Llama's
attention; gated-SiLU MLPs of the Llama family), only without LoRA adapters, and before
`prepack_linears`, which then prepacks the fused weights too.
"""

from __future__ import annotations

import types
from typing import Any

import torch

ATTENTION_CLASSES = frozenset({"LlamaAttention"})
MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
SILU_CLASSES = frozenset({"SiLU", "SiLUActivation"})  # torch's and transformers' own


def _plain(parts: list[Any]) -> bool:
    """Plain `nn.Linear` layers holding a weight tensor (not compressed or adapted ones)."""
    return all(
        type(part) is torch.nn.Linear and isinstance(getattr(part, "weight", None), torch.Tensor)
        for part in parts
    )


def _concatenated(linears: list[torch.nn.Linear]) -> torch.nn.Linear:
    """One `nn.Linear` whose output is the outputs of `linears`, side by side."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    biased = linears[0].bias is not None
    fused = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=biased, dtype=weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight)
        if biased:
            fused.bias.copy_(torch.cat([linear.bias.detach() for linear in linears]))
    return fused.to(weight.device)


def _attention_forward(
    self: Any,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    past_key_values: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """Llama's attention forward with q, k and v from one matmul, and the rotary embedding
    applied to q and k together (the same element-wise arithmetic, half the operations)."""
    from transformers.models.llama.modeling_llama import (
        ALL_ATTENTION_FUNCTIONS,
        eager_attention_forward,
    )

    input_shape = hidden_states.shape[:-1]
    heads = self.qkv_proj(hidden_states).view(*input_shape, -1, self.head_dim).transpose(1, 2)
    query_heads, key_heads, _ = self.qkv_heads
    rotated = heads[:, : query_heads + key_heads]
    assert position_embeddings is not None
    cos, sin = (part.unsqueeze(1) for part in position_embeddings)
    rotated = rotate(rotated, cos, sin)
    query, key = rotated[:, :query_heads], rotated[:, query_heads:]
    value = heads[:, query_heads + key_heads :]
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(
        self.config._attn_implementation, eager_attention_forward
    )
    output, weights = attention(
        self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
    )
    return self.o_proj(output.reshape(*input_shape, -1).contiguous()), weights


def rotate(heads: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding (Llama's rotate-half form) of [batch, heads, positions, dim] heads,
    with `cos`/`sin` broadcast over the heads."""
    half = heads.shape[-1] // 2
    turned = torch.cat((-heads[..., half:], heads[..., :half]), dim=-1)
    return heads * cos + turned * sin


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """A gated-SiLU MLP with gate and up from one matmul."""
    gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
    return self.down_proj(torch.nn.functional.silu(gate) * up)


def _fuse_attention(module: Any) -> bool:
    if type(module).__name__ not in ATTENTION_CLASSES:
        return False
    parts = [module.q_proj, module.k_proj, module.v_proj]
    if not _plain(parts):
        return False
    module.qkv_heads = [part.out_features // module.head_dim for part in parts]
    module.qkv_proj = _concatenated(parts)
    del module.q_proj, module.k_proj, module.v_proj
    module.forward = types.MethodType(_attention_forward, module)
    return True


def _fuse_mlp(module: Any) -> bool:
    if type(module).__name__ not in MLP_CLASSES:
        return False
    if type(getattr(module, "act_fn", None)).__name__ not in SILU_CLASSES:
        return False
    parts = [module.gate_proj, module.up_proj]
    if not _plain(parts):
        return False
    module.gate_up_proj = _concatenated(parts)
    del module.gate_proj, module.up_proj
    module.forward = types.MethodType(_mlp_forward, module)
    return True


def fuse_projections(model: Any) -> int:
    """Fuse the q/k/v and gate/up projections of every known layer of `model` (inference
    only); returns how many modules were fused."""
    fused = 0
    for module in list(model.modules()):
        fused += _fuse_attention(module) or _fuse_mlp(module)
    return fused
