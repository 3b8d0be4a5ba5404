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
