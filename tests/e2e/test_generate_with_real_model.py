"""`data generate sft|preferences` with the real embedded model, from instruction-only seed tasks
(Alpaca rows without `output`, as self-instruct seeds are written); the files pass `data
validate`."""

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


SEED_TASKS = (
    "Write a haiku about rain.",
    "Explain what a Python list is in one sentence.",
    "Give three tips for writing clear emails.",
    "Name two uses of a dictionary in Python.",
)


def test_generated_sft_and_preference_files_validate(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in SEED_TASKS))
    sft = tmp_path / "sft.jsonl"
    result = run(
        "data", "generate", "sft", "-o", str(sft), "--seeds", str(seeds), "--count", "2",
        "--max-tokens", "40",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 2 sft rows" in result.stdout
    rows = [json.loads(line) for line in sft.read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    checked = run("data", "validate", str(sft), "--json", "--on-error", "fail")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["kept"] == 2

    prefs = tmp_path / "prefs.jsonl"
    result = run(
        "data",
        "generate",
        "preferences",
        "-o",
        str(prefs),
        "--prompts",
        str(seeds),
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
    checked = run("data", "validate", str(prefs), "--json", "--on-error", "fail")
    assert checked.returncode == 0, checked.stdout
    assert json.loads(checked.stdout)["format"] == "preference"
