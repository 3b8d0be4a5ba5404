"""Acceptance: an lm-evaluation-harness task scored by `largeforge eval --tasks lm:NAME` (a real
subprocess, scoring in-process over the harness's HF model) equals `lm_eval --model
local-completions` run by hand against `largeforge serve` on the same model, within the
harness's standard error.

Both sides apply the model's chat template (LargeForge's default for a model that has one;
`--apply_chat_template` on the `lm_eval` side) and both score float32 log-likelihoods (the server
is started with `--dtype float32`: `auto` would pick bf16 on a CPU with bf16 instructions), so the
accuracies should in fact be equal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge, running_server

pytestmark = pytest.mark.slow


def test_largeforge_eval_equals_lm_eval_against_serve(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    from largeforge.adapters.lm_eval import bundled_task_dir

    # LargeForge: the bundled task by name, chat template by default (the tiny model has one)
    evaluated = subprocess.run(
        largeforge("eval", str(tiny_model_dir), "--tasks", "lm:largeforge_facts",
                   "-o", str(tmp_path / "ours")),
        capture_output=True, text=True, env=cli_env(), timeout=600, check=False,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (variant,) = json.loads((tmp_path / "ours" / "eval.json").read_text())["variants"]
    ours = {s["metric"]: s for s in variant["scores"]}
    assert {s["task"] for s in variant["scores"]} == {"lm:largeforge_facts"}

    # by hand: the same YAML and data, run from their folder (the data path is relative)
    tasks = tmp_path / "tasks"
    shutil.copytree(bundled_task_dir(), tasks, ignore=shutil.ignore_patterns("*.py", "__py*"))
    args = ("--model", str(tiny_model_dir), "--served-model-name", "tiny", "--dtype", "float32")
    with running_server(*args, log=tmp_path / "server.log") as base:
        model_args = (
            f"model=tiny,base_url={base}/v1/completions,tokenizer={tiny_model_dir},"
            "tokenizer_backend=huggingface,num_concurrent=4,max_retries=1"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "local-completions",
                "--model_args",
                model_args,
                "--include_path",
                str(tasks),
                "--tasks",
                "largeforge_facts",
                "--apply_chat_template",
                "--output_path",
                str(tmp_path / "out"),
            ],
            cwd=tasks,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env=os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
        )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    by_hand = json.loads(results_file.read_text())
    theirs = by_hand["results"]["largeforge_facts"]
    assert by_hand["n-samples"]["largeforge_facts"]["effective"] == 48
    assert by_hand["config"]["model"] == "local-completions"

    # local-completions sends token-id prompts with echo, logprobs and max_tokens=1: every
    # choice of every question was scored by the server (one request each, none lost)
    docs = [
        json.loads(line) for line in (tasks / "largeforge_facts.jsonl").read_text().splitlines()
    ]
    served = (tmp_path / "server.log").read_text()
    assert served.count('"request_served"') >= sum(len(d["choices"]) for d in docs)

    assert set(ours) == {"acc", "acc_norm"}
    for metric, score in ours.items():
        tolerance = max(theirs[f"{metric}_stderr,none"], 1e-6)
        assert abs(score["value"] - theirs[f"{metric},none"]) <= tolerance, (metric, theirs)
        assert score["n"] == 48
        assert score["stderr"] == pytest.approx(theirs[f"{metric}_stderr,none"], abs=1e-9)
