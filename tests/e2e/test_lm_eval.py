"""lm-evaluation-harness's `local-completions` scores an offline log-likelihood task against
`largeforge serve` (it sends token-id prompts with `echo`, `logprobs` and `max_tokens=1`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_lm_eval_local_completions_scores_a_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "capitals.jsonl"
    shutil.copy(ROOT / "examples" / "lm_eval" / "capitals.jsonl", data)
    spec = (ROOT / "examples" / "lm_eval" / "largeforge_facts.yaml").read_text()
    (tasks / "largeforge_facts.yaml").write_text(
        spec.replace("examples/lm_eval/capitals.jsonl", str(data))
    )
    args = ("--model", str(tiny_model_dir), "--served-model-name", "tiny")
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
                "--output_path",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env=os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
        )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results_file.read_text())["results"]["largeforge_facts"]
    assert 0.0 <= scores["acc,none"] <= 1.0
    served = (tmp_path / "server.log").read_text()
    assert served.count('"request_served"') >= 8 * 3 - 1  # every choice was scored by the server
