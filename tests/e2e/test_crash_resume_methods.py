"""SIGKILL then `--resume` for KTO and GRPO: the run continues from its latest complete
checkpoint, trains no step twice, and ends where an uninterrupted run ends (the same losses;
for GRPO the same sampled generations, so the same rewards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_crash_resume import assert_complete, checkpoints, processes, resumed_from, train

pytestmark = pytest.mark.slow

CONFIG = """\
model: {model}
dataset: {data}
method: {method}
lora: {{rank: 4, alpha: 8}}
merge: false
training: {{max_steps: 6, batch_size: 4, learning_rate: 0.005, warmup_steps: 0,
  logging_steps: 1, save_steps: 2, keep_checkpoints: 2, max_length: 128, seed: 7}}
"""
GROUPS = {
    "kto": "kto: {beta: 0.1}\n",
    "grpo": (
        "grpo: {num_generations: 4, max_completion_length: 8, rewards: "
        "[{kind: numeric_answer}, {kind: length_penalty, max_chars: 12}]}\n"
    ),
}


def rows(method: str) -> list[dict[str, object]]:
    if method == "kto":
        return [
            {"prompt": f"Is {i} even?", "completion": c, "label": good}
            for i in range(12)
            for c, good in ((("yes" if i % 2 == 0 else "no"), True), ("banana banana", False))
        ]
    return [{"prompt": f"What is {i} + 1?", "reference": str(i + 1)} for i in range(24)]


@pytest.mark.parametrize("method", ["kto", "grpo"])
def test_a_killed_run_resumes_without_training_a_step_twice(
    method: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(method)))
    config = tmp_path / "run.yaml"
    config.write_text(
        CONFIG.format(model=tiny_model_dir, data=data, method=method) + GROUPS[method]
    )
    out = tmp_path / "runs"
    crash_dir = out / "crash"

    reference = train(config, out, "--name", "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    first = train(config, out, "--name", "crash", kill_at="4:optimizer")
    assert first.returncode == -9, first.stderr[-2000:]
    assert json.loads((crash_dir / "run.json").read_text())["state"] == "running"
    assert list(checkpoints(crash_dir)) == [2]

    second = train(config, out, "--name", "crash", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert resumed_from(second.stderr) == "checkpoint-2"
    trained = processes(crash_dir)
    assert [[m["step"] for m in p] for p in trained] == [[1, 2, 3, 4], [3, 4, 5, 6]]

    (ref_steps,) = processes(out / "reference")
    expected = {m["step"]: m for m in ref_steps}
    for process in trained:
        for m in process:
            assert m["loss"] == pytest.approx(expected[m["step"]]["loss"], rel=1e-4, abs=1e-6), m
            assert m["learning_rate"] == pytest.approx(expected[m["step"]]["learning_rate"])
            if method == "grpo":  # the same generations were sampled and scored
                assert m["reward"] == pytest.approx(expected[m["step"]]["reward"], abs=1e-6), m
            else:
                assert m["kl"] == pytest.approx(expected[m["step"]]["kl"], rel=1e-3, abs=1e-6)

    run = json.loads((crash_dir / "run.json").read_text())
    assert run["state"] == "succeeded"
    assert run["resumes"] == 1
    assert run["result"]["steps"] == 6
    assert list(checkpoints(crash_dir)) == [4, 6]
    assert_complete(checkpoints(crash_dir)[6])
