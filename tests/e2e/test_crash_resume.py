"""Crash test: SIGKILL mid-run, `--resume`, and the result matches an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow

CONFIG = """\
model: {model}
lora: {{rank: 4, alpha: 8}}
merge: false
training: {{max_steps: 12, batch_size: 4, learning_rate: 0.005, warmup_steps: 0,
  logging_steps: 1, save_steps: 3, keep_checkpoints: 2, max_length: 256, seed: 7}}
"""


def train(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        largeforge("run-training", str(config), "--output", str(out), *extra),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        check=False,
    )


def final(run_dir: Path) -> tuple[dict[str, object], dict[str, float]]:
    run = json.loads((run_dir / "run.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last_step = [m for m in metrics if "loss" in m and m["step"] == 12]
    return run, last_step[-1]


def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir))
    out = tmp_path / "runs"

    reference = train(config, out, "--name", "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]

    crash_dir = out / "crash"
    process = subprocess.Popen(
        largeforge("run-training", str(config), "--output", str(out), "--name", "crash"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    checkpoint = crash_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert json.loads((crash_dir / "run.json").read_text())["state"] == "running"

    # What a kill in the middle of a save could leave: a staged copy and a torn directory.
    staged = crash_dir / "checkpoints" / ".staging" / "checkpoint-999"
    staged.mkdir(parents=True)
    (staged / "adapter_model.safetensors").write_bytes(b"partial")
    (crash_dir / "checkpoints" / "checkpoint-998").mkdir()

    resumed = train(config, out, "--name", "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '"event": "resuming"' in resumed.stderr
    assert "checkpoint-998" not in resumed.stderr
    assert "checkpoint-999" not in resumed.stderr

    ref_run, ref_last = final(out / "reference")
    run, last = final(crash_dir)
    assert run["state"] == "succeeded"
    assert run["resumes"] == 1
    states = [h["state"] for h in run["history"]]
    assert states == ["running", "interrupted", "running", "succeeded"]
    assert last["loss"] == pytest.approx(ref_last["loss"], rel=1e-3)
    assert run["result"]["eval_loss_after"] == pytest.approx(
        ref_run["result"]["eval_loss_after"], rel=1e-3
    )
    assert run["result"]["steps"] == 12
    kept = sorted(p.name for p in (crash_dir / "checkpoints").glob("checkpoint-*"))
    assert "checkpoint-12" in kept


def test_resume_refuses_a_finished_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir).replace("max_steps: 12", "max_steps: 2"))
    out = tmp_path / "runs"
    (out / "x").mkdir(parents=True)
    first = train(config, out, "--name", "x", "--max-steps", "2")
    assert first.returncode == 0
    again = train(config, out, "--name", "x", "--resume")
    assert again.returncode == 2
    assert "already succeeded" in again.stderr
