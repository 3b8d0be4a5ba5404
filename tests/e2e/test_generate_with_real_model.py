"""`data generate sft|preferences` with the real embedded model; the files pass `data validate`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        largeforge(*args), capture_output=True, text=True, env=cli_env(), timeout=600, check=False
    )


def test_generated_sft_and_preference_files_validate(tmp_path: Path) -> None:
    sft = tmp_path / "sft.jsonl"
    result = run("data", "generate", "sft", "-o", str(sft), "--count", "2", "--max-tokens", "40")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 2 sft rows" in result.stdout
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert run("data", "validate", str(sft)).returncode == 0

    prefs = tmp_path / "prefs.jsonl"
    result = run(
        "data",
        "generate",
        "preferences",
        "-o",
        str(prefs),
        "--count",
        "2",
        "--samples",
        "2",
        "--max-tokens",
        "24",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert rows
    assert all(r["chosen"] != r["rejected"] for r in rows)
    checked = run("data", "validate", str(prefs), "--json")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["format"] == "preference"
