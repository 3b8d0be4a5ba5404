"""The embedded SmolLM2-135M, as a user runs it: a short LoRA run on the bundled data, its
merged model quantized into the run, then `largeforge eval RUN`: base, adapter, merged and
quantized in one table; the fine-tune's held-out loss is lower than the base's, with a paired
interval that excludes zero, and the quantized model mostly agrees with the merged one."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(
        importlib.util.find_spec("llmcompressor") is None, reason="the quant extra is missing"
    ),
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smol")
    config = root / "run.yaml"
    config.write_text(
        "name: smol\n"
        "training: {max_steps: 8, batch_size: 4, learning_rate: 0.001, warmup_steps: 0,"
        " save_steps: 0}\n"
    )
    trained = run("run-training", str(config), "--output", str(root / "runs"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = root / "runs" / "smol"
    quantized = run(
        "quantize", str(run_dir / "merged"), "--method", "gptq", "--group-size", "32",
        "--samples", "8",
    )  # fmt: skip
    assert quantized.returncode == 0, quantized.stderr[-3000:]
    return run_dir


def test_the_embedded_model_base_adapter_merged_and_quantized(smol_run: Path) -> None:
    result = run("eval", str(smol_run))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((smol_run / "eval" / "eval.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["base", "adapter", "merged", "quantized-gptq-w4"]
    found: dict[str, dict[str, Any]] = {
        v["name"]: {s["metric"]: s for s in v["scores"]} for v in report["variants"]
    }
    base, merged = found["base"]["loss"], found["merged"]["loss"]
    assert merged["value"] < base["value"]
    assert found["adapter"]["loss"]["value"] == pytest.approx(merged["value"], abs=1e-3)
    row = next(line for line in result.stdout.splitlines() if line.startswith("| heldout | loss"))
    merged_minus_base = row.split("|")[-3].strip()  # "-0.1234 [-0.2, -0.05]"
    high = float(merged_minus_base.split("[")[1].split(",")[1].rstrip("]"))
    assert high < 0, row  # the paired interval of the difference excludes zero
    agreement = found["quantized-gptq-w4"]["top1_agreement_vs_merged"]["value"]
    assert 0.7 < agreement < 1.0
    assert (smol_run / "eval" / "eval.png").is_file()
