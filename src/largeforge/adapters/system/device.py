"""Device and dtype detection (cuda, mps, cpu), with the reason for the dtype picked."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
"""Short dtype names accepted wherever a dtype is asked for."""
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags whose instructions compute in bf16 (AMX tiles, or AVX-512 BF16 dot products)."""


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator to use and the dtype that serves well on it (`dtype_reason` says why)."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    dtype_name: str  # "bfloat16" | "float16" | "float32"
    dtype_reason: str = ""

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def cpu_bf16(self) -> bool:
        """A CPU with bf16 instructions (then its bf16 matmuls beat fp32 ones)."""
        return self.is_cpu and self.dtype_name == "bfloat16"

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux `/proc/cpuinfo`); empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_dtype(flags: Iterable[str]) -> tuple[str, str]:
    """bf16 where the CPU has bf16 instructions, else fp32; with the reason, for the logs."""
    present = [flag for flag in BF16_CPU_FLAGS if flag in set(flags)]
    if present:
        return "bfloat16", f"the CPU has {' and '.join(present)}"
    return "float32", "the CPU has no bf16 instructions (amx_bf16 or avx512_bf16)"


def detect_device(prefer: str = "auto", flags: Iterable[str] | None = None) -> DeviceInfo:
    """Pick cuda, then mps, then cpu (or honour `prefer`), and the dtype that suits it.

    bf16 on CUDA devices that support it, fp16 on older ones and on MPS; on a CPU, bf16 when it
    has bf16 instructions (`flags`, read from the CPU when not given), otherwise fp32.
    """
    import torch

    kind = prefer
    if prefer == "auto":
        if torch.cuda.is_available():
            kind = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            kind = "mps"
        else:
            kind = "cpu"
    if kind == "cuda":
        name = torch.cuda.get_device_name(0)
        supported = torch.cuda.is_bf16_supported()
        dtype = "bfloat16" if supported else "float16"
        reason = "the GPU supports bf16" if supported else "the GPU has no bf16"
    elif kind == "mps":
        name, dtype, reason = "Apple MPS", "float16", "MPS computes in fp16"
    else:
        import platform

        name = platform.processor() or platform.machine() or "cpu"
        dtype, reason = cpu_dtype(cpu_flags() if flags is None else flags)
    return DeviceInfo(kind=kind, name=name, dtype_name=dtype, dtype_reason=reason)


def resolve_dtype(requested: str, device: DeviceInfo) -> str:
    """Map a requested dtype ("auto", "float32", "bfloat16", "float16") to a concrete one."""
    requested = DTYPE_ALIASES.get(requested, requested)
    if requested == "auto":
        return device.dtype_name
    if requested not in {"float32", "bfloat16", "float16"}:
        raise ValueError(f"unknown dtype {requested!r}: use auto, float32, bfloat16 or float16")
    return requested
