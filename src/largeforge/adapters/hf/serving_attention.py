"""The serving engine's attention: transformers' sdpa, without copying grouped K/V on a CPU.

The engine's batches are left-padded (prompts of different lengths), so every step carries an
attention mask. With a mask, transformers' sdpa path repeats each grouped-query K/V head for
every query head (`repeat_kv`: a copy of the whole cache, every layer, every step), because on
CUDA a mask sends grouped sdpa to the math kernel. torch's CPU flash kernel takes a mask and
grouped heads together, so on a CPU this attention passes both straight to it. A decode step
(one query position) goes further: the query heads that share a K/V head become that head's
query rows, so the kernel walks each cached K/V block once per group instead of once per query
head (16 rows over 170 cached positions: 210 to 143 us a layer, the same numbers). Anything else
(no grouping, training, another device) is transformers' own sdpa.

    from_pretrained(..., attn_implementation=register())
"""

from __future__ import annotations

from typing import Any

SERVING_ATTENTION = "largeforge_serving_sdpa"


def serving_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function: masked grouped-query sdpa on a CPU, else stock sdpa."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = query.shape[1] != key.shape[1] and key.shape[-1] == value.shape[-1]
    plain = kwargs.get("position_bias") is None and not module.training
    if not grouped or not plain or query.device.type != "cpu":
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    length = query.shape[2]
    shared = attention_mask is None or attention_mask.shape[1] == 1  # one mask for all heads
    if length == 1 and shared:
        return decode_attention(query, key, value, attention_mask, scaling), None
    if attention_mask is None:
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    output = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        scale=scaling,
        enable_gqa=True,
    )
    return output.transpose(1, 2).contiguous(), None


def decode_attention(query: Any, key: Any, value: Any, mask: Any, scaling: float | None) -> Any:
    """Attention of one query position ([batch, heads, 1, dim]) over grouped K/V, with one
    `mask` ([batch, 1, 1, keys] or None) for every head; returns [batch, 1, heads, dim].

    The query heads that share a K/V head become that head's query rows (one position, so no
    causal order among them); the kernel then walks each cached K/V block once per group
    instead of once per query head.
    """
    import torch

    batch, heads, _, dim = query.shape
    groups = key.shape[1]
    output = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(batch, groups, heads // groups, dim),
        key,
        value,
        attn_mask=mask,
        scale=scaling,
    )
    return output.reshape(batch, 1, heads, dim)


def register() -> str:
    """Register the attention (and sdpa's masks for it) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SERVING_ATTENTION, serving_sdpa_attention)
    AttentionMaskInterface.register(SERVING_ATTENTION, sdpa_mask)
    return SERVING_ATTENTION
