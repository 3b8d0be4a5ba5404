"""`data generate tools` in a real process on the tiny random model: every call written parses
and satisfies its tool's schema (valid by construction, since the grammar constrains it, even
from random weights), and the file passes `data validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from largeforge.domain.schema_check import check_instance
from tests.e2e.server import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "description": "Set an alarm on a weekday",
            "parameters": {
                "type": "object",
                "properties": {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "day": {"type": "string", "enum": ["mon", "tue", "wed"]},
                    "repeat": {"type": "boolean"},
                },
                "required": ["hour", "day"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
]


def test_calls_from_random_weights_are_valid_and_the_file_validates(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    out = tmp_path / "tools.jsonl"
    result = run_cli(
        "data", "generate", "tools", "--tools", str(tools), "-o", str(out),
        "--model", str(tiny_model_dir), "--count", "4", "--max-tokens", "200",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote 4 tool rows to {out}" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    calls = []
    for row in rows:
        assert row["tools"] == TOOLS
        user, assistant = row["messages"]
        assert user["role"] == "user"
        assert user["content"]
        assert assistant["role"] == "assistant"
        for call in assistant.get("tool_calls", []):
            function = call["function"]
            arguments = json.loads(function["arguments"])  # parses
            assert check_instance(arguments, schemas[function["name"]]) is None, function
            calls.append(function["name"])
    assert len(calls) == 3  # the default no-call share: one of four answered in text
    checked = run_cli("data", "validate", str(out), "--json", "--on-error", "fail")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert json.loads(checked.stdout)["kept"] == 4
