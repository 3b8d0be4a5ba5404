"""Variable-length attention for padding-free packed batches, on any device.

A padding-free batch is one row holding many samples, with position ids restarting per sample and
`cu_seq_lens_q` (cumulative sample lengths) from TRL's collator. transformers' `sdpa` turns that
into a block-diagonal mask over the whole row: attention quadratic in the batch's total length,
through the slow masked kernel. Flash-attention's varlen kernels avoid that, but only on CUDA with
`flash-attn` installed. This attention groups the samples by length and runs each group as one
causal `sdpa` call over its samples right-padded to the group's longest (a group's padding is at
most half again its real tokens), so the cost is near the sum of the samples' squares and the
calls are few, on CPUs and GPUs alike. Any other batch (padded, decoding with a KV cache) goes to
the stock `sdpa` path.

On a CPU, attention that is being trained in bf16 runs in fp32: torch's bf16 flash-attention
backward for the CPU is 2 to 5 times slower than its fp32 one on short rows (measured: 41 against
9 ms for 40 rows of 50 tokens), and the cast costs far less. Training on a bf16 CPU uses this
attention for that reason, packed or not.

    register()  # once; then from_pretrained(..., attn_implementation=PACKED_ATTENTION)
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

PACKED_ATTENTION = "largeforge_packed_sdpa"


def packed_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function: length-grouped causal sdpa for packed rows, else stock
    sdpa; in fp32 while training bf16 on a CPU."""
    import torch

    dtype = query.dtype
    if query.device.type == "cpu" and dtype == torch.bfloat16 and torch.is_grad_enabled():
        query, key, value = query.float(), key.float(), value.float()
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()
        output, _ = _attention(module, query, key, value, attention_mask, dropout, scaling, kwargs)
        return output.to(dtype), None
    return _attention(module, query, key, value, attention_mask, dropout, scaling, kwargs)


def _attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float,
    scaling: float | None,
    kwargs: dict[str, Any],
) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    boundaries = kwargs.get("cu_seq_lens_q")
    length = query.shape[2]
    packed = query.shape[0] == 1 and key.shape[2] == length and getattr(module, "is_causal", True)
    if boundaries is None or not packed:
        output, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
        return output, None
    cuts = boundaries.tolist()
    if cuts[-1] != length:  # the collator padded the row: the tail is its own (ignored) segment
        cuts.append(length)
    plan = padded_plan(tuple(cuts), str(query.device))
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[3]
    outputs = []
    for index, count in plan.groups:

        def rows(x: Any, n_heads: int, index: Any = index, count: int = count) -> Any:
            return x[0].index_select(1, index).view(n_heads, count, -1, dim).transpose(0, 1)

        out = torch.nn.functional.scaled_dot_product_attention(
            rows(query, heads),
            rows(key, kv_heads),
            rows(value, kv_heads),
            dropout_p=dropout if module.training else 0.0,
            is_causal=True,
            scale=scaling,
            enable_gqa=heads != kv_heads,
        )
        outputs.append(out.transpose(1, 2).reshape(-1, heads, dim))
    # One gather puts every real position back in row order.
    return torch.cat(outputs).index_select(0, plan.back).unsqueeze(0), None


@dataclass(frozen=True)
class PaddedPlan:
    """How one packed row runs: per group, the row positions of its right-padded samples (each
    padded to the group's longest by repeating its last position) and the sample count; then,
    per row position, its place among the groups' concatenated outputs."""

    groups: tuple[tuple[Any, int], ...]
    back: Any


@functools.lru_cache(maxsize=8)  # every layer of a step sees the same boundaries
def padded_plan(cuts: tuple[int, ...], device: str) -> PaddedPlan:
    """The `PaddedPlan` of a row cut at `cuts` (cumulative sample boundaries)."""
    import torch

    spans = [(start, end - start) for start, end in itertools.pairwise(cuts) if end > start]
    back = [0] * cuts[-1]
    groups, base = [], 0
    for group in length_groups([size for _, size in spans]):
        # Under a causal mask no real query sees a padding key (each comes after it); the
        # padding queries' outputs are never gathered back.
        longest = spans[group[0]][1]
        index = []
        for slot, i in enumerate(group):
            start, size = spans[i]
            index += [start + min(j, size - 1) for j in range(longest)]
            for j in range(size):
                back[start + j] = base + slot * longest + j
        groups.append((torch.tensor(index, device=device), len(group)))
        base += len(group) * longest
    return PaddedPlan(tuple(groups), torch.tensor(back, device=device))


def length_groups(sizes: list[int], waste: float = 1.5) -> list[list[int]]:
    """Sample indices grouped for one padded attention call each, longest first: a group takes
    the next sample while its padded size stays within `waste` times its real tokens (one call
    per group instead of one per sample; many short samples, one call)."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if groups and (len(groups[-1]) + 1) * sizes[groups[-1][0]] <= waste * (real + sizes[i]):
            groups[-1].append(i)
            real += sizes[i]
        else:
            groups.append([i])
            real = sizes[i]
    return groups


def register() -> str:
    """Register the attention (and sdpa's masks for it) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION
