"""bf16 linear layers with weights prepacked for oneDNN, for inference on a CPU with bf16
instructions (AMX or AVX-512 BF16): the serving engine and the embedding encoder.

`torch.nn.functional.linear` on a bf16 CPU tensor reorders the weight into oneDNN's blocked
layout at every call; prepacking does it once at load time (`_reorder_linear_weight`), and each
call is then a single oneDNN matmul (`_linear_pointwise`). On a 2-core AVX-512 BF16 machine the
tied 49152 x 576 head of SmolLM2 ran 5.7x faster at 16 rows and 3.7x at one row this way
(benchmarks/serve_throughput.py measures the whole engine).

Only plain `torch.nn.Linear` layers are replaced; a LoRA layer's frozen base (PEFT's
`base_layer`) is left as it is, so adapters keep working. The packed weight is inference-only:
there is no gradient and no state dict entry for it.
"""

from __future__ import annotations

from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)

TILE_ROWS = 16
"""Rows of x the AMX `gemm_tiles` kernel takes in one call."""
TILE_DEPTH = 32
"""`gemm_tiles` needs in_features a multiple of this (one tile step)."""


def can_prepack(dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> bool:
    """Whether this torch build and CPU run oneDNN bf16 linears (bf16 on a CPU only)."""
    if device != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def prepack(weight: torch.Tensor, batch_hint: int) -> torch.Tensor:
    """An (out x in) weight as bf16, reordered once into oneDNN's blocked layout."""
    bf16 = weight.detach().to(torch.bfloat16).contiguous()
    packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(bf16, batch_hint)
    return packed


def linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """`x @ weight.T + bias` in bf16 with a `prepack`ed weight, then `activation` ("none" or
    "gelu", the exact erf GELU) fused into the same oneDNN call."""
    algorithm = "none" if activation == "gelu" else ""
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
        x, packed, bias, activation, [], algorithm
    )
    return out


class PrepackedLinear(torch.nn.Module):  # type: ignore[misc]
    """`torch.nn.Linear` (bf16, CPU) whose weight was reordered once for oneDNN.

    With `gemv` (`cpu_kernels.gemv_ops()`), the weight is also kept in that kernel's layout and
    a single row (a batch-1 decode step) runs through it: nearer the memory bandwidth than
    oneDNN's one-row path, at the cost of a second copy of the weight. With `tiles` as well
    (`cpu_kernels.tile_ops()`), 2 to 16 rows (a batched decode step) run on AMX tiles over that
    copy, again nearer the bandwidth than oneDNN; more rows (a prefill) go to oneDNN.
    """

    def __init__(
        self, linear: torch.nn.Linear, batch_hint: int, gemv: Any = None, tiles: Any = None
    ) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.packed = prepack(linear.weight, batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self._gemv = gemv if gemv is not None and gemv_fits(linear) else None
        self.vector_packed = None
        self.vector_bias = None
        if self._gemv is not None:
            self.vector_packed = self._gemv.gemv_pack(linear.weight.detach().to(torch.bfloat16))
            if linear.bias is not None:
                self.vector_bias = linear.bias.detach().float().contiguous()
        fits = self._gemv is not None and linear.in_features % TILE_DEPTH == 0
        self._tiles = tiles if fits else None

    @property
    def gemv_kernels(self) -> Any:
        """The CPU kernels (`cpu_kernels.gemv_ops()`) this layer's one-row calls use, or None."""
        return self._gemv

    @property
    def tile_kernels(self) -> Any:
        """The CPU kernels (`cpu_kernels.tile_ops()`) this layer's 2- to 16-row calls use, or
        None."""
        return self._tiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor
        if self._gemv is not None and x.numel() == self.in_features:  # one row
            out = self._gemv.gemv(x, self.vector_packed, self.vector_bias)
            return out
        if self._tiles is not None and x.numel() <= TILE_ROWS * self.in_features:
            out = self._tiles.gemm_tiles(x, self.vector_packed, self.vector_bias)
            return out
        return linear(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        kernels = (
            "prepacked" + (", gemv" if self._gemv else "") + (", tiles" if self._tiles else "")
        )
        return f"in_features={self.in_features}, out_features={self.out_features}, {kernels}"


def gemv_fits(linear: torch.nn.Linear) -> bool:
    """Whether the gemv kernel takes this layer's shape (outputs in blocks of 16, even inputs)."""
    return bool(linear.out_features % 16 == 0 and linear.in_features % 2 == 0)


def prepack_linears(model: Any, batch_hint: int, gemv: Any = None, tiles: Any = None) -> int:
    """Replace every plain bf16 `nn.Linear` of `model` by a `PrepackedLinear` (one-row calls
    through `gemv`, 2 to 16 rows through `tiles`, where given); returns how many were
    replaced. LoRA base layers (a `base_layer` child of a PEFT layer) are kept."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            weight = getattr(child, "weight", None)  # compressed-tensors linears have none
            if type(child) is not torch.nn.Linear or not isinstance(weight, torch.Tensor):
                continue
            if weight.dtype != torch.bfloat16:
                continue
            if name == "base_layer" and hasattr(parent, "lora_A"):
                continue
            setattr(parent, name, PrepackedLinear(child, batch_hint, gemv, tiles))
            replaced += 1
    return replaced
