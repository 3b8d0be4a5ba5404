"""`serve --enable-lora` on the transformers engine: an adapter loaded and unloaded at run time
under load, with the official client and vLLM's routes (the vLLM engine's case is in
test_vllm_lora.py, on its own server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.live_adapters import load_and_unload_under_load
from tests.e2e.server import running_server

pytestmark = pytest.mark.slow
KEY = "sk-live"


def test_an_adapter_loaded_and_unloaded_under_load_fails_no_request(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.support import build_tiny_adapter

    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter", seed=5, rank=8)
    args = ("--model", str(tiny_model_dir), "--served-model-name", "tiny", "--enable-lora")
    args += ("--dtype", "float32", "--max-num-seqs", "4", "--api-key", KEY)
    with running_server(*args, log=tmp_path / "serve.log") as base:
        seen = load_and_unload_under_load(base, "tiny", adapter, api_key=KEY)
    assert seen["base_requests"] > 0
