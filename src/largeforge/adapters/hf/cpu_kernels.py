"""LargeForge's own CPU kernels (C++ in `resources/kernels/`), built at first use.

torch's JIT extension build compiles them once per source and flags with the system's C++
compiler (and ninja, a dependency) into torch's extension cache, then loads them as torch ops
(`torch.ops.largeforge_cpu`). They are used only where the CPU has the instructions they need;
a missing compiler or a failed build is logged (`cpu_kernels`) and the caller keeps torch's
own kernels. `LARGEFORGE_CPU_KERNELS=0` turns them off.

- `gemv`, `gemv_pack`: one-row bf16 linear layers near the memory bandwidth (AVX-512 BF16),
  for the serving engine's batch-1 decode steps (`fast_linear.PrepackedLinear`).
- `decode_row`: a whole one-row decode step of a Llama model in one call (every layer, the
  final norm and the head) over `gemv_pack`ed projections and the batch's KV cache buffers
  (`decode_step.LlamaDecodeStep`).
- `gemm_tiles`: 2 to 16 rows of a bf16 linear on AMX tiles, over the same `gemv_pack`ed
  weights (a batched decode step's linears), where the CPU has AMX and Linux grants the
  process its tile state (`tile_ops`).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from importlib import resources
from typing import Any

import structlog

from largeforge.adapters.system.device import cpu_flags

log = structlog.get_logger(__name__)

GEMV_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_bf16"})
"""CPU flags the gemv kernel's instructions need."""

TILE_FLAGS = frozenset({"amx_tile", "amx_bf16"})
"""CPU flags the `gemm_tiles` kernel needs, besides GEMV_FLAGS."""

COMPILE_FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-fopenmp"]


def enabled() -> bool:
    """Whether LargeForge's CPU kernels may be used (`LARGEFORGE_CPU_KERNELS` is not 0)."""
    return os.environ.get("LARGEFORGE_CPU_KERNELS", "1").strip() not in {"0", "false", "no"}


@functools.cache
def gemv_ops() -> Any | None:
    """`torch.ops.largeforge_cpu` (`gemv`, `gemv_pack`, `decode_row`, ...), built and loaded on
    first call; None where the CPU lacks AVX-512 BF16, the kernels are off or the build failed."""
    if not enabled():
        log.info("cpu_kernels", gemv=False, reason="LARGEFORGE_CPU_KERNELS=0")
        return None
    missing = sorted(GEMV_FLAGS - cpu_flags())
    if missing:
        log.info("cpu_kernels", gemv=False, reason=f"the CPU lacks {', '.join(missing)}")
        return None
    import torch
    from torch.utils import cpp_extension

    source = resources.files("largeforge") / "resources" / "kernels" / "cpu_gemv.cpp"
    started = time.perf_counter()
    try:
        _put_ninja_on_path()
        with resources.as_file(source) as path:
            cpp_extension.load(
                name="largeforge_cpu_gemv",
                sources=[str(path)],
                extra_cflags=COMPILE_FLAGS,
                extra_ldflags=["-fopenmp"],
                is_python_module=False,
                verbose=False,
            )
    except Exception as exc:  # no compiler, no ninja, a failed build: torch's kernels remain
        log.warning("cpu_kernels", gemv=False, reason=f"build failed: {exc}".splitlines()[0])
        return None
    log.info("cpu_kernels", gemv=True, seconds=round(time.perf_counter() - started, 1))
    return torch.ops.largeforge_cpu


@functools.cache
def tile_ops() -> Any | None:
    """`torch.ops.largeforge_cpu` where `gemm_tiles` may run: the kernels are built, the CPU
    has AMX BF16 and Linux granted this process the tile state; None otherwise."""
    ops = gemv_ops()
    if ops is None:
        return None
    missing = sorted(TILE_FLAGS - cpu_flags())
    if missing:
        log.info("cpu_kernels", tiles=False, reason=f"the CPU lacks {', '.join(missing)}")
        return None
    if not ops.tiles_enable():
        log.info("cpu_kernels", tiles=False, reason="Linux refused the AMX tile state")
        return None
    log.info("cpu_kernels", tiles=True)
    return ops


def _put_ninja_on_path() -> None:
    """torch's build runs `ninja` from PATH: add the ninja package's own (a venv not activated)."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])
