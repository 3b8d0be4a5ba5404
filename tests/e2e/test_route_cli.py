"""`largeforge route eval|explain|calibrate` as real subprocesses with the packaged MiniLM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.server import cli_env, largeforge

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "examples" / "router" / "experts.yaml"
LABELLED = ROOT / "tests" / "data" / "router_labelled.jsonl"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        largeforge(*args), capture_output=True, text=True, env=cli_env(), timeout=300, check=False
    )


def test_eval_reports_all_three_classifiers_and_hybrid_is_best() -> None:
    lines = LABELLED.read_text().splitlines()
    experts = {json.loads(line)["expert"] for line in lines}
    assert len(lines) >= 60
    assert len(experts) >= 3
    result = run("route", "eval", str(CONFIG), str(LABELLED), "--json-output")
    assert result.returncode == 0, result.stderr
    reports = {r["classifier"]: r for r in json.loads(result.stdout)}
    assert set(reports) == {"keyword", "neural", "hybrid"}
    accuracy = {name: r["accuracy"] for name, r in reports.items()}
    assert accuracy["hybrid"] >= accuracy["keyword"]
    assert accuracy["hybrid"] >= accuracy["neural"]
    assert accuracy["hybrid"] >= 0.8  # well above the 1/4 of guessing
    hybrid = reports["hybrid"]
    assert sum(sum(row.values()) for row in hybrid["confusion"].values()) == len(lines)
    assert 0 <= hybrid["default_share"] < 0.2


def test_explain_prints_a_score_table_and_the_route() -> None:
    result = run("route", "explain", str(CONFIG), "why does my sourdough not rise")
    assert result.returncode == 0, result.stderr
    assert "cooking" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("-> cooking")


def test_calibrate_writes_a_config_that_routes_at_least_as_well(tmp_path: Path) -> None:
    out = tmp_path / "calibrated.yaml"
    result = run("route", "calibrate", str(CONFIG), str(LABELLED), "--output", str(out))
    assert result.returncode == 0, result.stderr
    experts = {e["name"]: e for e in yaml.safe_load(out.read_text())["experts"]}
    assert all(isinstance(experts[n]["threshold"], float) for n in ("code", "math", "cooking"))
    before = json.loads(run("route", "eval", str(CONFIG), str(LABELLED), "--classifier",
                            "neural", "--json-output").stdout)[0]  # fmt: skip
    after = json.loads(run("route", "eval", str(out), str(LABELLED), "--classifier",
                           "neural", "--json-output").stdout)[0]  # fmt: skip
    assert after["accuracy"] >= before["accuracy"]


def test_a_bad_config_names_the_key() -> None:
    result = run("route", "explain", str(LABELLED), "hi")
    assert result.returncode == 2
    assert "expected a mapping" in result.stderr or "invalid YAML" in result.stderr
