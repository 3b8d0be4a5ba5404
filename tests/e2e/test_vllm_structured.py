"""Output constraints on the vLLM engine: every output matches its grammar, then ends.

`tests/e2e/vllm_structured_probe.py` drives `VllmInferenceEngine` on the tiny random model in the
vLLM environment (tests/e2e/vllm_env.py: a missing environment fails, it does not skip) and
writes what it generated; the cases here validate it with jsonschema in this environment. A
random model at temperature 1 writes whatever the grammar lets it, so a leak in the constraint
shows at once. (The HTTP layer's `response_format` gets its own cases once it is served.)
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.e2e import vllm_structured_probe as probe
from tests.e2e.vllm_env import ROOT, START_TIMEOUT, vllm_python

pytestmark = pytest.mark.slow
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.support import build_tiny_model

    python = vllm_python()
    root = tmp_path_factory.mktemp("structured")
    model = build_tiny_model(root / "tiny-hd64", head_dim=64)  # vLLM's CPU attention needs 64
    out, log = root / "results.json", root / "probe.log"
    with log.open("w") as output:
        done = subprocess.run(
            [python, str(Path(probe.__file__)), str(model), str(out)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT + 300,
            check=False,
        )
    assert done.returncode == 0, log.read_text()[-6000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def case(results: dict[str, Any], name: str) -> str:
    """The text of a case that ended because its grammar did (end-of-sequence, not the budget)."""
    result = results["cases"][name]
    assert result["finish"] == "stop", result
    assert result["tokens"] < probe.MAX_TOKENS, result
    text: str = result["text"]
    return text


def assert_compact(text: str) -> None:
    """No whitespace outside JSON strings (the transformers engine's compact separators)."""
    assert not re.search(r"\s", JSON_STRING.sub('""', text)), text


@pytest.mark.parametrize("seed", probe.JSON_SEEDS)
def test_json_schema_outputs_validate_and_are_compact(results: dict[str, Any], seed: int) -> None:
    text = case(results, f"json_{seed}")
    jsonschema.validate(json.loads(text), probe.SCHEMA)
    assert_compact(text)


def test_the_seeds_sample_different_objects(results: dict[str, Any]) -> None:
    texts = {results["cases"][f"json_{seed}"]["text"] for seed in probe.JSON_SEEDS}
    assert len(texts) == len(probe.JSON_SEEDS)


def test_regex_output_matches_in_full(results: dict[str, Any]) -> None:
    assert re.fullmatch(probe.REGEX, case(results, "regex"))


def test_choice_output_is_one_of_the_choices(results: dict[str, Any]) -> None:
    assert case(results, "choice") in probe.CHOICES


def test_ignore_eos_stops_where_the_grammar_does(results: dict[str, Any]) -> None:
    assert case(results, "choice_ignore_eos") in probe.CHOICES


def test_structural_tag_output_is_one_call_with_valid_arguments(results: dict[str, Any]) -> None:
    text = case(results, "tool")
    assert text.startswith(probe.TOOL_BEGIN), text
    assert text.endswith(probe.TOOL_END), text
    arguments = text.removeprefix(probe.TOOL_BEGIN).removesuffix(probe.TOOL_END)
    jsonschema.validate(json.loads(arguments), probe.ARGUMENTS)
    assert not re.search(r"\s\s", JSON_STRING.sub('""', arguments)), arguments


def test_check_constraint_refuses_an_invalid_schema(results: dict[str, Any]) -> None:
    refused = results["invalid_check"]
    assert refused is not None, "check_constraint accepted {'type': 'objekt'}"
    assert refused["type"] == "InvalidRequestError"
    assert refused["param"] is None
    assert "objekt" in refused["message"]
    assert "\n" not in refused["message"]


def test_generate_maps_vllms_refusal_to_an_invalid_request(results: dict[str, Any]) -> None:
    refused = results["unsupported_generate"]
    assert refused is not None, "vLLM generated under a schema xgrammar does not support"
    assert refused["type"] == "InvalidRequestError"
    assert refused["param"] is None
    assert "\n" not in refused["message"]
