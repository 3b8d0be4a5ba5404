"""`run-training --nproc 2`: DDP over gloo on this CPU, one process records the run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow


def test_two_processes_train_one_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        largeforge(
            "run-training",
            "--model",
            str(tiny_model_dir),
            "--nproc",
            "2",
            "--max-steps",
            "4",
            "--name",
            "ddp",
            "--output",
            str(tmp_path / "runs"),
        ),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run" in result.stderr
    assert '"world_size": 2' in result.stderr
    run_dir = tmp_path / "runs" / "ddp"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "succeeded"
    assert run["result"]["steps"] == 4
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1]  # logged once, by rank 0
    assert [m["step"] for m in metrics if "eval_loss" in m] == [0, 4]
    assert (run_dir / "merged" / "model.safetensors").is_file()
    assert result.stdout.count("run ddp: succeeded") == 1
