"""LoRA adapters on the vLLM engine: the rank comes from the adapter, and its row uses its weights.

The server runs from the vLLM environment (tests/e2e/vllm_env.py); the references are computed
here with transformers and PEFT on the same tiny model.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.live_adapters import load_and_unload_under_load
from tests.e2e.server import free_port, running_server, spawn, stop
from tests.e2e.vllm_env import START_TIMEOUT, vllm_python
from tests.support import build_tiny_adapter

pytestmark = pytest.mark.slow
RANK = 24  # not one of vLLM's ranks (1, 8, 16, 32, ...): the engine must reserve 32 for it
PROMPT = "The cat sat on the mat because it"


def build_adapter(model_dir: Path, out: Path) -> Path:
    """A rank-24 LoRA adapter whose weights change the model's outputs (B is not zero)."""
    return build_tiny_adapter(model_dir, out, seed=3, rank=RANK, alpha=16)


def reference_logprobs(model_dir: Path, adapter: Path | None, ids: list[int]) -> list[float]:
    """Each prompt token's log-probability after the ones before it (from the second token)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    chosen = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), ids[1:]]
    return [float(value) for value in chosen]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hd64", head_dim=64)


@pytest.fixture(scope="module")
def adapter(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_adapter(model_dir, tmp_path_factory.mktemp("adapters") / "tuned")


@pytest.fixture(scope="module")
def client(
    model_dir: Path, adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    python = vllm_python()
    args = ("--model", str(model_dir), "--served-model-name", "tiny", "--backend", "vllm")
    args += ("--lora", f"tuned={adapter}", "--max-model-len", "128", "--max-num-seqs", "2")
    args += ("--dtype", "float32")  # scored against fp32 references
    args += ("--enable-lora", "--max-lora-rank", "8")  # below the start-up adapter's own rank
    log = tmp_path_factory.mktemp("serve") / "vllm-lora.log"
    with running_server(*args, log=log, timeout=START_TIMEOUT, python=python) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)


def echo(client: openai.OpenAI, model: str, ids: list[int]) -> list[float | None]:
    reply = client.completions.create(
        model=model, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.token_logprobs is not None
    return logprobs.token_logprobs[: len(ids)]


def test_the_adapter_row_is_scored_with_the_adapter_and_the_base_without(
    client: openai.OpenAI, model_dir: Path, adapter: Path
) -> None:
    from transformers import AutoTokenizer

    assert [m.id for m in client.models.list()] == ["tiny", "tuned"]
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT)["input_ids"]
    tuned = reference_logprobs(model_dir, adapter, ids)
    base = reference_logprobs(model_dir, None, ids)
    assert max(abs(t - b) for t, b in zip(tuned, base, strict=True)) > 0.05  # the adapter matters
    got_tuned, got_base = echo(client, "tuned", ids), echo(client, "tiny", ids)
    assert got_tuned[0] is None
    assert got_base[0] is None
    assert got_tuned[1:] == pytest.approx(tuned, abs=1e-3)
    assert got_base[1:] == pytest.approx(base, abs=1e-3)


def test_an_adapter_without_a_rank_is_reported_by_health_naming_it(
    model_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    args = ("--model", str(model_dir), "--backend", "vllm", "--lora", f"x={broken}")
    port, log = free_port(), tmp_path / "serve.log"
    process = spawn("serve", *args, port=port, log=log, python=vllm_python())
    try:
        health = health_after_loading(process, f"http://127.0.0.1:{port}", log)
    finally:
        stop(process)
    assert health["status"] == "error", health
    assert "ConfigError: LoRA adapter 'x'" in health["error"]
    assert "has no valid LoRA rank 'r' (None)" in health["error"]


def health_after_loading(process: subprocess.Popen[bytes], base: str, log: Path) -> Any:
    """The /health body once the server stopped loading (ready or failed)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with contextlib.suppress(httpx.TransportError):
            body = httpx.get(f"{base}/health", timeout=2).json()
            if body["status"] != "loading":
                return body
        time.sleep(0.3)
    raise AssertionError(f"still loading after {START_TIMEOUT}s: {log.read_text()}")


def test_an_adapter_loaded_and_unloaded_under_load_fails_no_request(
    client: openai.OpenAI, model_dir: Path, tmp_path: Path
) -> None:
    """vLLM's engine under `serve --enable-lora`: the same scenario as the transformers
    engine's (tests/e2e/live_adapters.py); a rank above the reserved one is refused."""
    from tests.support import build_tiny_adapter

    base = str(client.base_url).removesuffix("/v1/")
    too_big = build_tiny_adapter(model_dir, tmp_path / "big", seed=6, rank=64, alpha=16)
    refused = httpx.post(
        f"{base}/v1/load_lora_adapter", json={"lora_name": "big", "lora_path": str(too_big)}
    )
    assert refused.status_code == 400
    assert "rank 64, above this server's --max-lora-rank 32" in refused.json()["error"]["message"]
    adapter = build_tiny_adapter(model_dir, tmp_path / "live", seed=5, rank=8, alpha=16)
    seen = load_and_unload_under_load(base, "tiny", adapter, long_tokens=64)
    assert seen["base_requests"] > 0
