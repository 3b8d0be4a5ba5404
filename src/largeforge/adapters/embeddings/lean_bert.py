"""A lean bf16 forward pass of a BERT encoder (all-MiniLM-L6-v2 and its kin) for CPUs with bf16
instructions.

Same arithmetic as transformers' `BertModel` at inference, with far fewer Python-level ops per
call, which is what dominates a ~10-token query: the query, key and value projections are one
prepacked bf16 matmul, GELU is fused into the intermediate matmul, attention is one
`scaled_dot_product_attention`, and no mask is built for an unpadded batch. Matmuls run in bf16
(oneDNN, `adapters/hf/fast_linear.py`); embeddings, the residual stream and the layer norms
stay in fp32, so the pooled vectors keep a cosine of 0.9999+ to fp32 ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from largeforge.adapters.hf import fast_linear

BATCH_HINT = 1
"""oneDNN's batch-size hint for the weight layout: a query embeds one short text at a time."""


class _Layer(NamedTuple):
    qkv: torch.Tensor
    qkv_bias: torch.Tensor
    out: torch.Tensor
    out_bias: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor, float]
    up: torch.Tensor
    up_bias: torch.Tensor
    down: torch.Tensor
    down_bias: torch.Tensor
    norm2: tuple[torch.Tensor, torch.Tensor, float]


def supports(model: Any) -> bool:
    """Whether `model` is a plain BERT encoder this forward reproduces exactly."""
    config = model.config
    return (
        config.model_type == "bert"
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and config.hidden_act == "gelu"
        and not getattr(config, "is_decoder", False)
        and hasattr(model, "embeddings")
        and hasattr(model, "encoder")
    )


def _norm(layer_norm: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    return layer_norm.weight.detach().float(), layer_norm.bias.detach().float(), layer_norm.eps


def _bias(*linears: Any) -> torch.Tensor:
    return torch.cat([lin.bias.detach() for lin in linears]).to(torch.bfloat16)


class LeanBert:
    """`__call__(input_ids, attention_mask)` -> the last hidden state (fp32), like `BertModel`'s
    `last_hidden_state` for token type 0 and right padding."""

    def __init__(self, model: Any) -> None:
        embeddings = model.embeddings
        self.heads = int(model.config.num_attention_heads)
        self.hidden = int(model.config.hidden_size)
        self.word = embeddings.word_embeddings.weight.detach().float()
        # absolute positions plus token type 0, added in one op
        self.position = (
            embeddings.position_embeddings.weight.detach().float()
            + embeddings.token_type_embeddings.weight.detach()[0].float()
        )
        self.norm = _norm(embeddings.LayerNorm)
        self.layers = []
        for layer in model.encoder.layer:
            attention = layer.attention.self
            q, k, v = attention.query, attention.key, attention.value
            self.layers.append(
                _Layer(
                    qkv=fast_linear.prepack(torch.cat([q.weight, k.weight, v.weight]), BATCH_HINT),
                    qkv_bias=_bias(q, k, v),
                    out=fast_linear.prepack(layer.attention.output.dense.weight, BATCH_HINT),
                    out_bias=_bias(layer.attention.output.dense),
                    norm1=_norm(layer.attention.output.LayerNorm),
                    up=fast_linear.prepack(layer.intermediate.dense.weight, BATCH_HINT),
                    up_bias=_bias(layer.intermediate.dense),
                    down=fast_linear.prepack(layer.output.dense.weight, BATCH_HINT),
                    down_bias=_bias(layer.output.dense),
                    norm2=_norm(layer.output.LayerNorm),
                )
            )

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows, length = input_ids.shape
        heads, width = self.heads, self.hidden
        shape = (width,)
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        linear = fast_linear.linear
        x = F.layer_norm(self.word[input_ids] + self.position[:length], shape, *self.norm)
        for layer in self.layers:
            qkv = linear(x.to(torch.bfloat16), layer.qkv, layer.qkv_bias)
            q, k, v = qkv.view(rows, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            context = context.transpose(1, 2).reshape(rows, length, width)
            x = F.layer_norm(linear(context, layer.out, layer.out_bias) + x, shape, *layer.norm1)
            up = linear(x.to(torch.bfloat16), layer.up, layer.up_bias, "gelu")
            x = F.layer_norm(linear(up, layer.down, layer.down_bias) + x, shape, *layer.norm2)
        return x
