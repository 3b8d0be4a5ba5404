"""A run killed with SIGTERM mid-training is recorded as interrupted, not lost.

The signal is sent when the run reaches a given, observable state (no timed delays): the run
recorded as running (the model loading), the first evaluation recorded, a training step
recorded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow


def metrics(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def running(run_dir: Path) -> bool:
    path = run_dir / "run.json"
    return path.is_file() and json.loads(path.read_text())["state"] == "running"


def evaluated(run_dir: Path) -> bool:
    return any("eval_loss" in m for m in metrics(run_dir))


def trained_a_step(run_dir: Path) -> bool:
    return any("loss" in m for m in metrics(run_dir))


@pytest.mark.parametrize("reached", [running, evaluated, trained_a_step])
def test_sigterm_marks_the_run_interrupted(
    tiny_model_dir: Path, tmp_path: Path, reached: Callable[[Path], bool]
) -> None:
    process = subprocess.Popen(
        largeforge(
            "run-training",
            *("--model", str(tiny_model_dir), "--max-steps", "100000"),
            *("--name", "killed", "--output", str(tmp_path / "runs")),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    run_dir = tmp_path / "runs" / "killed"
    deadline = time.monotonic() + 300
    while not reached(run_dir):  # polls an observable state; the kill is not timed
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"the run never reached {reached.__name__}"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "interrupted"
    assert [h["state"] for h in run["history"]] == ["running", "interrupted"]
    assert "Traceback" not in stderr
