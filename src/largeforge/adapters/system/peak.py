"""The device's measured matmul peak (GFLOP/s) in a dtype, measured once and cached on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

from largeforge.adapters.models.resolver import largeforge_home
from largeforge.adapters.system.device import DeviceInfo


def _cache_path() -> Path:
    return largeforge_home() / "device_peak.json"


def measure_matmul_peak(device: DeviceInfo, dtype_name: str, size: int = 2048) -> float:
    """Best-of-5 square matmul throughput, in GFLOP/s."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device.kind)
    b = torch.randn(size, size, dtype=dtype, device=device.kind)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        if device.kind == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.kind == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_peak(device: DeviceInfo, dtype_name: str, *, refresh: bool = False) -> float:
    """The cached peak for this device and dtype, measuring (and caching) it when missing."""
    key = f"{device.kind}:{device.name}:{dtype_name}"
    path = _cache_path()
    cache: dict[str, float] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cache = {}
    if refresh or key not in cache:
        cache[key] = round(measure_matmul_peak(device, dtype_name), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=2) + "\n", encoding="utf-8")
    return float(cache[key])


def flops_per_token(base_parameters: int, full_fine_tuning: bool) -> float:
    """Training FLOPs per token: 6N for full fine-tuning, 4N when frozen weights get no weight
    gradients (LoRA: forward 2N plus the input-gradient half of the backward pass)."""
    return (6.0 if full_fine_tuning else 4.0) * base_parameters
