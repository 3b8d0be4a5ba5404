"""`largeforge data validate | convert | preview` as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from largeforge.entrypoints.cli.main import main


def planted(tmp_path: Path) -> Path:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"},
                ]
            }
        )
        for i in range(10)
    ]
    rows += [
        "{bad json",
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}
        ),
    ]
    path = tmp_path / "planted.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_validate_reports_each_bad_row_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "validate", str(planted(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "rows 13   kept 10   skipped 3" in out
    assert "planted.jsonl:11: invalid JSON" in out
    assert "planted.jsonl:12 field 'messages[0].role': unknown role 'wizard'" in out
    assert "planted.jsonl:13 field 'messages': empty assistant turn" in out
    assert "FAILED" in out
    assert "max_skip_fraction" in out


def test_validate_json_and_a_looser_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(planted(tmp_path))
    assert main(["data", "validate", path, "--json", "--max-skip-fraction", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["issues_by_kind"] == {"invalid_json": 1, "unknown_role": 1, "empty_assistant": 1}
    assert [i["line"] for i in report["issues"]] == [11, 12, 13]
    assert main(["data", "validate", path, "--on-error", "fail", "--max-skip-fraction", "1"]) == 1


def test_validate_with_a_model_reports_token_lengths(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["data", "validate", "sample", "--model", str(tiny_model_dir), "--max-length", "48"]
    )
    out = capsys.readouterr().out
    assert "tokens  p50" in out
    assert "too_long" in out
    assert code == 1  # many sample rows are longer than 48 tokens


def test_convert_round_trip_keeps_every_conversation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sharegpt = tmp_path / "sharegpt.jsonl"
    messages = tmp_path / "messages.jsonl"
    assert main(["data", "convert", "sample", "--to", "sharegpt", "-o", str(sharegpt)]) == 0
    assert main(["data", "convert", str(sharegpt), "--to", "messages", "-o", str(messages)]) == 0
    from largeforge.adapters.data.sources import sample_dataset_path

    original = [json.loads(line) for line in sample_dataset_path().read_text().splitlines()]
    assert [json.loads(line) for line in messages.read_text().splitlines()] == original
    alpaca = tmp_path / "alpaca.jsonl"
    assert main(["data", "convert", "sample", "--to", "alpaca", "-o", str(alpaca)]) == 1
    assert "only single-turn conversations convert to alpaca" in capsys.readouterr().err
    assert main(["data", "validate", str(alpaca)]) == 0


def test_preview_marks_exactly_the_trained_text(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["data", "preview", "sample", "--model", str(tiny_model_dir), "-n", "2", "--markers"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("sample_chat.jsonl:") == 2
    assert "<|im_start|>assistant\n[[" in out
    assert "<|im_end|>]]" in out
    assert "[[<|im_start|>" not in out


SHAREGPT_TOOLS = Path(__file__).parents[1] / "fixtures" / "tools_sharegpt.jsonl"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tool_row(arguments: str, name: str = "get_weather", answer_id: str = "c1") -> str:
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return json.dumps(
        {
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": f"weather? {arguments} {name} {answer_id}"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": answer_id, "content": "sunny"},
                {"role": "assistant", "content": "Sunny."},
            ],
        }
    )


def test_validate_names_each_planted_bad_tool_row_and_passes_clean_files_of_both_conventions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [tool_row(json.dumps({"city": f"c{i}"})) for i in range(6)]
    bad = [
        tool_row('{"city": "Paris"'),  # line 7: not JSON
        tool_row('{"city": "Rome"}', name="get_time"),  # line 8: undeclared
        tool_row('{"city": 3}'),  # line 9: violates the schema
        tool_row('{"city": "Oslo"}', answer_id="c9"),  # line 10: answers no call
    ]
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    assert main(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "OpenAI tools / tool_calls / tool messages" in out
    for line, reason in [
        (7, "arguments are not valid JSON"),
        (8, "call to 'get_time', which the row does not declare"),
        (9, "$.city: expected string, got integer"),
        (10, "a tool message answers no call 'c9'"),
    ]:
        assert any(
            row.strip().startswith(f"tools.jsonl:{line} field") and reason in row
            for row in out.splitlines()
        ), (line, reason, out)
    for kind in ("invalid_arguments", "undeclared_function", "schema_violation", "orphan_tool"):
        assert kind in out

    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(good) + "\n")
    assert main(["data", "validate", str(clean)]) == 0
    assert main(["data", "validate", str(SHAREGPT_TOOLS)]) == 0
    assert main(["data", "validate", "sample-tools"]) == 0
    assert "function_call / observation" in capsys.readouterr().out


def test_tool_conversations_convert_between_the_conventions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = tmp_path / "as_messages.jsonl"
    assert (
        main(["data", "convert", str(SHAREGPT_TOOLS), "-o", str(messages), "--to", "messages"]) == 0
    )
    rows = [json.loads(line) for line in messages.read_text().splitlines()]
    assert len(rows) == 12
    assert any(m.get("tool_calls") for row in rows for m in row["messages"])
    assert all(isinstance(row["tools"], list) for row in rows)
    back = tmp_path / "back.jsonl"
    assert main(["data", "convert", str(messages), "-o", str(back), "--to", "sharegpt"]) == 0
    assert main(["data", "validate", str(back)]) == 0


def test_preview_highlights_the_trained_calls_and_leaves_results_untrained(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = SHAREGPT_TOOLS
    assert main(["data", "preview", str(path), "--model", str(tiny_model_dir), "-n", "12",
                 "--markers"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert '[[call: <tool_call>\n{"name": ' in out
    assert "tools: " in out
    trained = [piece.split("]]")[0] for piece in out.split("[[")[1:]]
    assert not any("<tool_response>" in piece or "<tools>" in piece for piece in trained)
    assert "<tool_response>" in out
