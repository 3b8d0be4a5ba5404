"""Quantization: what to quantize and how, the pre-checks, and the report of what came out."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from largeforge.domain.errors import ConfigError


class QuantizationMethod(StrEnum):
    AWQ = "awq"
    GPTQ = "gptq"


#: Calibration samples by method on a CPU: enough for the ratios in docs/architecture.md within
#: minutes. llm-compressor's guidance for GPUs is 256-512 samples of up to 2048 tokens.
DEFAULT_SAMPLES = {QuantizationMethod.GPTQ: 64, QuantizationMethod.AWQ: 16}

#: The group sizes `auto` picks from, largest first: the largest that divides every quantized
#: layer's input width is chosen (fewer scales to store), else one group per output channel.
AUTO_GROUP_SIZES = (128, 64, 32)
#: `group_size` value for one scale per output channel.
PER_CHANNEL = -1

GroupSize = int | Literal["auto"]


@dataclass(frozen=True)
class QuantizationSpec:
    """Weight-only quantization of the linear layers: W4A16 with a zero point per group by
    default (asymmetric: clearly better than symmetric for small models at 4 bits)."""

    method: QuantizationMethod
    bits: int = 4
    group_size: GroupSize = "auto"
    symmetric: bool = False
    ignore: tuple[str, ...] = ("lm_head",)
    num_samples: int = 64
    max_seq_length: int = 512

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ConfigError(f"bits must be 4 or 8, got {self.bits}")
        if self.group_size != "auto" and self.group_size < 1 and self.group_size != PER_CHANNEL:
            raise ConfigError(
                f"group_size must be auto, a positive number of columns, or -1 for one group "
                f"per channel; got {self.group_size}"
            )
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_seq_length < 16:
            raise ConfigError(f"max_seq_length must be >= 16, got {self.max_seq_length}")

    @property
    def scheme(self) -> str:
        """The compressed-tensors preset name, e.g. W4A16 (symmetric) or W4A16_ASYM."""
        return f"W{self.bits}A16" + ("" if self.symmetric else "_ASYM")


def auto_group_size(widths: Iterable[int]) -> int:
    """The largest of `AUTO_GROUP_SIZES` that divides every width; `PER_CHANNEL` when none does."""
    common = _gcd(widths)
    for size in AUTO_GROUP_SIZES:
        if common % size == 0:
            return size
    return PER_CHANNEL


def resolve_group_size(spec: QuantizationSpec, widths: Mapping[str, int]) -> QuantizationSpec:
    """The spec with a number for its group size: `auto` becomes `auto_group_size(widths)`.
    Either way the size is then checked against every layer (`check_group_size`)."""
    if spec.group_size == "auto":
        spec = replace(spec, group_size=auto_group_size(widths.values()))
    check_group_size(spec, widths)
    return spec


def group_size_columns(spec: QuantizationSpec) -> int:
    """The resolved group size of a spec (`PER_CHANNEL` for one group per output channel)."""
    if spec.group_size == "auto":
        raise ConfigError("group size 'auto' must be resolved against the model's layers first")
    return spec.group_size


def describe_group_size(size: int, auto: bool) -> str:
    """e.g. `64 (auto: the largest of 128, 64, 32 that divides every quantized layer's width)`."""
    sizes = ", ".join(map(str, AUTO_GROUP_SIZES))
    if size == PER_CHANNEL:
        text = "per output channel"
        reason = f"none of {sizes} divides every quantized layer's input width"
    else:
        text = str(size)
        reason = f"the largest of {sizes} that divides every quantized layer's input width"
    return f"{text} (auto: {reason})" if auto else text


def check_group_size(spec: QuantizationSpec, widths: Mapping[str, int]) -> None:
    """Every quantized layer's input width must be a multiple of the group size.

    `widths` maps each linear layer that will be quantized to its input width. The error names
    the first layer that does not fit and the group sizes that fit every layer.
    """
    size = group_size_columns(spec)
    if size == PER_CHANNEL or not widths:
        return
    valid = valid_group_sizes(widths.values())
    for name, width in widths.items():
        if width % size == 0:
            continue
        smaller = [g for g in valid if g <= size]
        if valid:
            hint = f"use --group-size {smaller[-1] if smaller else valid[0]}"
        else:
            hint = "use --group-size -1 (one group per output channel)"
        raise ConfigError(
            f"group size {size} does not divide the input width {width} of "
            f"'{name}'; sizes that fit every layer: {', '.join(map(str, valid)) or 'none'}; "
            f"{hint}"
        )


def valid_group_sizes(widths: Iterable[int]) -> list[int]:
    """Powers of two from 32 to 1024 that divide every width (the sizes kernels support)."""
    common = _gcd(widths)
    return [g for g in (32, 64, 128, 256, 512, 1024) if common and common % g == 0]


def _gcd(widths: Iterable[int]) -> int:
    common = 0
    for width in widths:
        common = math.gcd(common, int(width))
    return common


@dataclass(frozen=True)
class QuantizationReport:
    """What a quantization did and how good the result is."""

    method: QuantizationMethod
    engine: str
    scheme: str
    group_size: int
    output_dir: str
    bytes_before: int
    bytes_after: int
    perplexity_before: float
    perplexity_after: float
    seconds: float
    calibration: str
    calibration_samples: int
    eval_tokens: int
    notes: tuple[str, ...] = field(default=())
    group_size_auto: bool = False

    @property
    def group_size_text(self) -> str:
        """The group size and, when `auto` chose it, why."""
        return describe_group_size(self.group_size, self.group_size_auto)

    @property
    def size_ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else math.nan

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity_after / self.perplexity_before

    def to_markdown(self) -> str:
        mb = 1024 * 1024
        return "\n".join(
            [
                f"# Quantization report: {self.method.value.upper()} {self.scheme}",
                "",
                f"- engine: {self.engine}",
                f"- group size: {self.group_size_text}",
                f"- calibration: {self.calibration} ({self.calibration_samples} samples)",
                f"- output: {self.output_dir}",
                f"- time: {self.seconds:.1f} s",
                "",
                "| | before | after | ratio |",
                "|---|---|---|---|",
                f"| size | {self.bytes_before / mb:.1f} MiB | {self.bytes_after / mb:.1f} MiB "
                f"| {self.size_ratio:.3f} |",
                f"| perplexity ({self.eval_tokens} held-out tokens) | "
                f"{self.perplexity_before:.3f} | {self.perplexity_after:.3f} "
                f"| {self.perplexity_ratio:.3f} |",
                *(["", *(f"- {n}" for n in self.notes)] if self.notes else []),
                "",
            ]
        )
