"""A run killed with SIGTERM mid-training is recorded as interrupted, not lost."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.5])  # while loading, evaluating, training
def test_sigterm_marks_the_run_interrupted(
    tiny_model_dir: Path, tmp_path: Path, delay: float
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
    run_json = tmp_path / "runs" / "killed" / "run.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if run_json.is_file() and json.loads(run_json.read_text())["state"] == "running":
            break
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-2000:]
    run = json.loads(run_json.read_text())
    assert run["state"] == "interrupted"
    assert [h["state"] for h in run["history"]] == ["running", "interrupted"]
    assert "Traceback" not in stderr
