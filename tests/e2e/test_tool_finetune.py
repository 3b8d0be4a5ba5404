"""Tool-use fine-tuning end to end, as a user runs it: the embedded SmolLM2 trained for a few
steps on the bundled tool-use conversations, merged, served with `largeforge serve`, and asked
held-out questions with `tools` through the official `openai` client under `tool_choice: auto`.

The base model never calls a tool on the held-out set (its function accuracy is 0), so a call
here is the fine-tune's doing; every call must name an offered function with arguments that
satisfy its schema.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import openai
import pytest

from largeforge.domain.schema_check import check_instance
from tests.e2e.server import run_cli, running_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
KEY = "sk-tools"
PROMPTS = [
    "What is the weather in Paris right now? Give me the temperature in celsius.",
    "Convert 100 USD to EUR.",
    "What time is it now in the Asia/Tokyo time zone?",
]


def held_out_tools() -> list[dict[str, Any]]:
    path = resources.files("largeforge.resources.eval") / "tools_eval.jsonl"
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    tools: list[dict[str, Any]] = first["tools"]
    return tools


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tools")
    config = root / "run.yaml"
    config.write_text(
        "name: tools\n"
        "dataset: sample-tools\n"
        "lora: {rank: 16, alpha: 32, target_modules: [all-linear]}\n"
        "training: {max_steps: 6, batch_size: 4, learning_rate: 0.001, warmup_steps: 0,"
        " save_steps: 0, max_length: 1100, val_size: 0.02}\n"
    )
    trained = run_cli("run-training", str(config), "--output", str(root / "runs"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "tool calls: OpenAI tools" in trained.stderr  # detection named the convention
    return root / "runs" / "tools"


def test_the_merged_fine_tune_served_calls_tools_validly(tool_run: Path, tmp_path: Path) -> None:
    tools = held_out_tools()
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    merged = tool_run / "merged"
    with running_server(
        "--model", str(merged), "--served-model-name", "tools", "--api-key", KEY,
        log=tmp_path / "server.log",
    ) as base:  # fmt: skip
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        calls = []
        for prompt in PROMPTS:
            reply = client.chat.completions.create(
                model="tools",
                messages=[{"role": "user", "content": prompt}],
                tools=tools,  # type: ignore[arg-type]
                tool_choice="auto",
                temperature=0,
                max_tokens=96,
            )
            choice = reply.choices[0]
            for call in choice.message.tool_calls or []:
                assert choice.finish_reason == "tool_calls"
                function = call.function  # type: ignore[union-attr]
                assert function.name in schemas
                arguments = json.loads(function.arguments)
                assert check_instance(arguments, schemas[function.name]) is None, arguments
                calls.append((prompt, function.name, arguments))
    assert len(calls) >= 2, calls
    assert {name for _, name, _ in calls} <= {"get_weather", "convert_currency", "get_time"}
