"""The training precision: which dtype computes, which dtype the weights are kept in, and why.

`training.precision: auto` trains in bf16 where the device computes bf16 fast (a bf16 GPU, a CPU
with amx_bf16 or avx512_bf16), in fp16 on older GPUs and MPS, and in fp32 elsewhere. On a bf16
CPU the lever depends on what trains (measured by `benchmarks/train_overhead.py`):

- LoRA, DoRA: the frozen base is loaded in bf16 (its matmuls run on the bf16 units) and the
  adapter weights stay fp32 (PEFT upcasts them; the adapter's small matmuls cast their input
  to fp32), without autocast: nothing casts fp32 weights to bf16 on every step.
- full fine-tuning: fp32 master weights (the optimizer's updates are far below bf16's
  resolution) under bf16 autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

from largeforge.adapters.system.device import DeviceInfo
from largeforge.domain.errors import ConfigError
from largeforge.domain.training import AdapterKind, TrainingPlan

_NAMES = {"fp32": "float32", "bf16": "bfloat16"}


def resolve_precision(device: DeviceInfo, requested: str = "auto") -> DeviceInfo:
    """`device` with `dtype_name` the dtype training computes in and `dtype_reason` saying why.

    `auto` keeps the detected dtype (bf16 on a CPU with bf16 instructions); `fp32` forces fp32;
    `bf16` is refused where the device has no bf16 (an fp16 GPU, MPS, a CPU without bf16)."""
    if requested == "auto":
        return device
    if requested not in _NAMES:
        raise ConfigError(f"training.precision must be auto, fp32 or bf16, got {requested!r}")
    dtype = _NAMES[requested]
    if dtype == "bfloat16" and device.dtype_name != "bfloat16":
        raise ConfigError(
            f"training.precision: bf16 needs a device that computes bf16, but {device.kind} "
            f"({device.name}) trains in {device.dtype_name} ({device.dtype_reason}): "
            "use precision auto or fp32"
        )
    return DeviceInfo(device.kind, device.name, dtype, f"training.precision: {requested}")


@dataclass(frozen=True)
class Precision:
    """How a run uses the compute dtype: the dtype the base weights load in, and whether
    the forward runs under autocast (TRL's `bf16`/`fp16` flags)."""

    compute: str  # the dtype the matmuls run in (the MFU peak is measured in it)
    weights: str  # the dtype the (frozen) base model is loaded in
    autocast: bool  # TrainingArguments bf16/fp16: torch.autocast around forward and loss

    @property
    def bf16_autocast(self) -> bool:
        return self.autocast and self.compute == "bfloat16"

    @property
    def fp16_autocast(self) -> bool:
        return self.autocast and self.compute == "float16"


def training_precision(device: DeviceInfo, plan: TrainingPlan) -> Precision:
    """The weights dtype and autocast for `plan` on `device` (whose dtype is the compute one)."""
    compute = device.dtype_name
    if compute == "float32":
        return Precision("float32", "float32", autocast=False)
    if device.is_cpu:
        if plan.adapter is AdapterKind.FULL:  # fp32 master weights, bf16 matmuls
            return Precision(compute, "float32", autocast=True)
        return Precision(compute, compute, autocast=False)  # bf16 frozen base, fp32 LoRA
    # Accelerators, as before: weights in the device dtype, autocast on CUDA (fp16 AMP needs
    # CUDA; MPS runs its fp16 weights as they are).
    return Precision(compute, compute, autocast=device.kind == "cuda" or compute == "bfloat16")
