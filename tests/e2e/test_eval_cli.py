"""`largeforge eval` through real subprocesses on a tiny run: the run file's `eval:` section
runs at the end of training, and base, adapter, merged and quantized land in one table with
intervals, top-1 agreement for the quantized model, the JSON, the chart and report.md's link."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    config = root / "run.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\n"
        "name: evaluated\n"
        "lora: {rank: 4, alpha: 8}\n"
        "training: {max_steps: 6, batch_size: 4, learning_rate: 0.005, warmup_steps: 0,"
        " max_length: 256, val_size: 0.2}\n"
        "eval: {tasks: [heldout], compare: [base, merged]}\n"
    )
    result = run("run-training", str(config), "--output", str(root / "runs"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "runs" / "evaluated"
    assert "| heldout | loss |" in result.stdout  # the eval: section ran after training
    (run_dir / "train.stdout").write_text(result.stdout)
    return run_dir


def scores(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        v["name"]: {f"{s['task']}/{s['metric']}": s for s in v["scores"]}
        for v in report["variants"]
    }


def test_the_run_files_eval_section_scores_base_and_merged(tiny_run: Path) -> None:
    report = json.loads((tiny_run / "eval" / "eval.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["base", "merged"]
    found = scores(report)
    base, merged = found["base"]["heldout/loss"], found["merged"]["heldout/loss"]
    assert merged["value"] < base["value"]
    for score in (base, merged):
        assert score["low"] <= score["value"] <= score["high"]
    run = json.loads((tiny_run / "run.json").read_text())["result"]
    # the same eval split as training's: its losses before and after match ours (TRL averages
    # per batch, we per token, so only closely)
    assert base["value"] == pytest.approx(run["eval_loss_before"], rel=0.05)
    assert merged["value"] == pytest.approx(run["eval_loss_after"], rel=0.05)


@pytest.mark.skipif(importlib.util.find_spec("llmcompressor") is None, reason="no quant extra")
def test_base_adapter_merged_and_quantized_in_one_table(tiny_run: Path) -> None:
    quantized = run(
        "quantize", str(tiny_run / "merged"), "--method", "gptq", "--samples", "8",
        "--group-size", "32",
    )  # fmt: skip
    assert quantized.returncode == 0, quantized.stderr[-3000:]
    assert (tiny_run / "quantized-gptq-w4" / "config.json").is_file()  # found inside the run

    result = run("eval", str(tiny_run), "-o", str(tiny_run / "all"))
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| task"))
    assert header == (
        "| task | metric | base | adapter | merged | quantized-gptq-w4 | adapter - base "
        "| merged - base | quantized-gptq-w4 - base |"
    )
    found = scores(json.loads((tiny_run / "all" / "eval.json").read_text()))
    assert found["adapter"]["heldout/loss"]["value"] == pytest.approx(
        found["merged"]["heldout/loss"]["value"], abs=1e-3
    )
    agreement = found["quantized-gptq-w4"]["heldout/top1_agreement_vs_merged"]
    assert 0.5 < agreement["value"] <= 1.0
    assert agreement["low"] <= agreement["value"] <= agreement["high"]
    assert (tiny_run / "all" / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "eval_report.md" in result.stdout


def test_report_md_links_the_evaluation(tiny_run: Path) -> None:
    report = (tiny_run / "report.md").read_text()
    assert "[eval/eval_report.md](eval/eval_report.md)" in report
    table = (tiny_run / "eval" / "eval_report.md").read_text()
    assert "| heldout | loss |" in table
    assert "![scores](eval.png)" in table


def test_fidelity_through_the_cli_exits_0_then_1_on_a_planted_eos(
    tiny_run: Path, tmp_path: Path
) -> None:
    equal = run("eval", str(tiny_run), "--compare", "merged", "--fidelity", "-o", str(tmp_path))
    assert equal.returncode == 0, equal.stderr[-3000:]
    assert "ok: " in equal.stdout
    assert json.loads((tmp_path / "fidelity.json").read_text())

    planted = tmp_path / "planted"
    shutil.copytree(tiny_run, planted, ignore=shutil.ignore_patterns("checkpoints", "eval*"))
    config_path = planted / "merged" / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = 0
    config_path.write_text(json.dumps(config))
    mismatch = run("eval", str(planted), "--compare", "merged", "--fidelity")
    assert mismatch.returncode == 1, mismatch.stderr[-3000:]
    assert "Traceback" not in mismatch.stderr
    errors = [line for line in mismatch.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: generation_config.eos_token_id is 0 (<|endoftext|>) but training ended turns "
        "with 2 (<|im_end|>)"
    ], mismatch.stderr[-3000:]
