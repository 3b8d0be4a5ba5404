"""Device and dtype detection (cuda, mps, cpu)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator to use and the dtype that trains and serves well on it."""

    kind: str  # "cuda" | "mps" | "cpu"
    name: str
    dtype_name: str  # "bfloat16" | "float16" | "float32"

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def detect_device(prefer: str = "auto") -> DeviceInfo:
    """Pick cuda, then mps, then cpu (or honour `prefer`). CPU trains in fp32.

    bf16 is used on CUDA devices that support it, fp16 on older ones and on MPS.
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
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    elif kind == "mps":
        name, dtype = "Apple MPS", "float16"
    else:
        import platform

        name, dtype = platform.processor() or platform.machine() or "cpu", "float32"
    return DeviceInfo(kind=kind, name=name, dtype_name=dtype)


def resolve_dtype(requested: str, device: DeviceInfo) -> str:
    """Map a requested dtype ("auto", "float32", "bfloat16", "float16") to a concrete one."""
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    requested = aliases.get(requested, requested)
    if requested == "auto":
        return device.dtype_name
    if requested not in {"float32", "bfloat16", "float16"}:
        raise ValueError(f"unknown dtype {requested!r}: use auto, float32, bfloat16 or float16")
    return requested
