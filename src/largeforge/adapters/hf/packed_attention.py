"""Variable-length attention for padding-free packed batches, on any device.

A padding-free batch is one row holding many samples, with position ids restarting per sample and
`cu_seq_lens_q` (cumulative sample lengths) from TRL's collator. transformers' `sdpa` turns that
into a block-diagonal mask over the whole row: attention quadratic in the batch's total length,
through the slow masked kernel. Flash-attention's varlen kernels avoid that, but only on CUDA with
`flash-attn` installed. This attention runs each sample as its own causal `sdpa` call instead, so
the cost is the sum of the samples' squares, on CPUs and GPUs alike. Any other batch (padded,
decoding with a KV cache) goes to the stock `sdpa` path unchanged.

    register()  # once; then from_pretrained(..., attn_implementation=PACKED_ATTENTION)
"""

from __future__ import annotations

import itertools
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
    """transformers attention function: per-sample causal sdpa for packed rows, else stock sdpa."""
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
    gqa = query.shape[1] != key.shape[1]
    dropout_p = dropout if module.training else 0.0
    # One split per tensor, not a slice per sample: a slice's backward zero-fills a gradient as
    # large as the whole row and adds into it (quadratic in the samples per row), while a
    # split's backward is one concatenation.
    sizes = [end - start for start, end in itertools.pairwise(cuts)]
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for q, k, v in zip(
            query.split(sizes, dim=2),
            key.split(sizes, dim=2),
            value.split(sizes, dim=2),
            strict=True,
        )
        if q.shape[2]
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention (and sdpa's masks for it) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    return PACKED_ATTENTION
