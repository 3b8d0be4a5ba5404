"""The examples of the preference and reward methods, run as a person runs them: the real
`largeforge run-training` on the embedded SmolLM2-135M for a few steps, merged, with each
method's metrics in metrics.jsonl and its report; then `largeforge eval` on one of them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples"
# The metrics each method must record on its training steps (KTO's margin needs both labels in
# a batch, so it is checked on the evaluations).
METRICS = {
    "kto": {"loss", "kl"},
    "orpo": {"loss", "reward_margin", "reward_accuracy"},
    "simpo": {"loss", "reward_margin", "reward_accuracy"},
    "grpo": {"loss", "reward", "reward_std", "reward/numeric_answer", "reward/only_the_number"},
}


@pytest.mark.parametrize("method", sorted(METRICS))
def test_each_method_example_trains_the_embedded_model(method: str, tmp_path: Path) -> None:
    # The example as it is, logging every step; GRPO's held-out evaluation samples 4 answers
    # a prompt, so it keeps fewer prompts here.
    settings = yaml.safe_load((EXAMPLES / f"{method}-lora.yaml").read_text())
    settings["training"]["logging_steps"] = 1
    if method == "grpo":
        settings["training"]["val_size"] = 0.05
    example = tmp_path / f"{method}-lora.yaml"
    example.write_text(yaml.safe_dump(settings))
    result = subprocess.run(
        largeforge(
            "run-training",
            str(example),
            "--max-steps",
            "2",
            "--output",
            str(tmp_path),
            "--name",
            method,
        ),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / method
    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "succeeded"
    assert run["plan"]["method"] == method
    assert run["result"]["steps"] == 2
    assert (run_dir / "merged" / "model.safetensors").is_file()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    for m in steps:
        assert METRICS[method] <= set(m), (method, sorted(m))
    evaluations = [m for m in lines if "eval_loss" in m]
    assert [m["step"] for m in evaluations] == [0, 2]
    if method != "grpo":
        assert all("eval_reward_margin" in m for m in evaluations), evaluations
    report = (run_dir / "report.md").read_text()
    assert "![rewards](rewards.png)" in report
    assert (run_dir / "rewards.png").stat().st_size > 1000
    if method == "grpo":
        assert run["result"]["eval_reward_before"] is not None
        assert "eval reward:" in result.stdout
        evaluated = subprocess.run(
            largeforge("eval", str(run_dir), "--tasks", "heldout", "--compare", "base,merged"),
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=900,
            check=False,
        )
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert "merged" in evaluated.stdout
