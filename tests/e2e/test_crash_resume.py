"""Crash tests: SIGKILL in the middle of checkpoint saves, `--resume`, and the run continues
exactly where its latest complete checkpoint left it, as if it had never stopped.

The kills are not timed: `LARGEFORGE_TEST_KILL_DURING_SAVE=STEP:PHASE` makes the trainer
SIGKILL itself at that point of saving checkpoint STEP (after the optimizer is written, or with
everything staged just before the rename).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow

KILL_HOOK = "LARGEFORGE_TEST_KILL_DURING_SAVE"
CONFIG = """\
model: {model}
lora: {{rank: 4, alpha: 8}}
merge: false
training: {{max_steps: 6, batch_size: 4, learning_rate: {lr}, warmup_steps: 0,
  logging_steps: 1, save_steps: 2, keep_checkpoints: 2, max_length: 256, seed: 7}}
"""


def train(
    config: Path, out: Path, *extra: str, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = cli_env() | ({KILL_HOOK: kill_at} if kill_at else {})
    return subprocess.run(
        largeforge("run-training", str(config), "--output", str(out), *extra),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def processes(run_dir: Path) -> list[list[dict[str, Any]]]:
    """The training-loss lines of metrics.jsonl, one list per process that trained the run
    (each process first records its step-0 evaluation)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    runs: list[list[dict[str, Any]]] = []
    for line in lines:
        if "eval_loss" in line and line["step"] == 0:
            runs.append([])
        elif "loss" in line:
            runs[-1].append(line)
    return runs


def checkpoints(run_dir: Path) -> dict[int, Path]:
    root = run_dir / "checkpoints"
    found = {int(p.name.removeprefix("checkpoint-")): p for p in root.glob("checkpoint-*")}
    return dict(sorted(found.items()))


def assert_complete(checkpoint: Path) -> None:
    """Every file of the checkpoint is there, whole and readable, and says its own step."""
    import torch
    from safetensors.torch import load_file

    step = int(checkpoint.name.removeprefix("checkpoint-"))
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert load_file(checkpoint / "adapter_model.safetensors")
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {step}
    assert torch.load(checkpoint / "scheduler.pt", weights_only=False)["last_epoch"] == step
    assert torch.load(checkpoint / "rng_state.pth", weights_only=False)["cpu"] is not None


def resumed_from(stderr: str) -> str:
    (event,) = [json.loads(line) for line in stderr.splitlines() if '"event": "resuming"' in line]
    return Path(event["checkpoint"]).name


def test_kills_during_saves_then_resume_continue_the_run_exactly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir, lr=0.005))
    out = tmp_path / "runs"
    crash_dir = out / "crash"

    reference = train(config, out, "--name", "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]

    # 1. Killed while saving checkpoint-4, between the optimizer and the trainer state.
    first = train(config, out, "--name", "crash", kill_at="4:optimizer")
    assert first.returncode == -9, first.stderr[-2000:]
    assert json.loads((crash_dir / "run.json").read_text())["state"] == "running"
    assert list(checkpoints(crash_dir)) == [2]
    assert (crash_dir / "checkpoints" / ".staging" / "checkpoint-4").is_dir()  # the torn save
    for checkpoint in checkpoints(crash_dir).values():
        assert_complete(checkpoint)

    # A resume with a changed config is refused in one line, and the run stays resumable.
    changed = tmp_path / "changed.yaml"
    changed.write_text(CONFIG.format(model=tiny_model_dir, lr=0.001))
    refused = train(changed, out, "--name", "crash", "--resume")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines() == [
        "error: run crash: the configuration changed since the run started "
        "(resume with the same config, or pass --force)"
    ]
    assert json.loads((crash_dir / "run.json").read_text())["state"] == "interrupted"

    # 2. Resumed from checkpoint-2, killed with checkpoint-6 staged but not yet renamed.
    second = train(config, out, "--name", "crash", "--resume", kill_at="6:publish")
    assert second.returncode == -9, second.stderr[-2000:]
    assert resumed_from(second.stderr) == "checkpoint-2"
    assert [m["step"] for m in processes(crash_dir)[-1]] == [3, 4, 5, 6]  # not from step 1
    assert list(checkpoints(crash_dir)) == [2, 4]
    for checkpoint in checkpoints(crash_dir).values():
        assert_complete(checkpoint)

    # 3. Resumed from checkpoint-4, to the end.
    third = train(config, out, "--name", "crash", "--resume")
    assert third.returncode == 0, third.stderr[-3000:]
    assert resumed_from(third.stderr) == "checkpoint-4"
    assert [m["step"] for m in processes(crash_dir)[-1]] == [5, 6]

    # No step at or before a resumed checkpoint was trained again by the resuming process.
    (ref_steps,) = processes(out / "reference")
    trained = processes(crash_dir)
    assert [[m["step"] for m in p] for p in trained] == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6]]
    # Optimizer, scheduler, data order and RNG continued: each step's loss and learning rate
    # are the uninterrupted run's.
    expected = {m["step"]: m for m in ref_steps}
    for process in trained:
        for m in process:
            assert m["loss"] == pytest.approx(expected[m["step"]]["loss"], rel=1e-4), m
            assert m["learning_rate"] == pytest.approx(expected[m["step"]]["learning_rate"])
    final = checkpoints(crash_dir)[6]
    assert_complete(final)  # its optimizer took 6 steps, its scheduler stepped 6 times
    ref_rng = torch.load(checkpoints(out / "reference")[6] / "rng_state.pth", weights_only=False)
    rng = torch.load(final / "rng_state.pth", weights_only=False)
    assert torch.equal(rng["cpu"], ref_rng["cpu"])

    run = json.loads((crash_dir / "run.json").read_text())
    ref_run = json.loads((out / "reference" / "run.json").read_text())
    assert run["state"] == "succeeded"
    assert run["resumes"] == 2
    assert [h["state"] for h in run["history"]] == [
        *("running", "interrupted", "running", "interrupted", "running", "succeeded")
    ]
    assert run["result"]["steps"] == 6
    assert run["result"]["eval_loss_after"] == pytest.approx(
        ref_run["result"]["eval_loss_after"], rel=1e-4
    )
    # keep_checkpoints: 2 keeps exactly the two latest, and no staged save is left behind.
    assert list(checkpoints(crash_dir)) == [4, 6]
    assert list(checkpoints(out / "reference")) == [4, 6]
    assert not (crash_dir / "checkpoints" / ".staging").exists()


def test_resume_refuses_a_finished_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir, lr=0.005))
    out = tmp_path / "runs"
    (out / "x").mkdir(parents=True)
    first = train(config, out, "--name", "x", "--max-steps", "2")
    assert first.returncode == 0
    again = train(config, out, "--name", "x", "--resume")
    assert again.returncode == 2
    assert "already succeeded" in again.stderr
