"""Every file type through one call, and a file with planted bad rows of every kind."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.data.sources import FileRowSource, sample_dataset_path
from largeforge.application.data import PrepareDataset, enforce_policy
from largeforge.domain import DatasetError
from largeforge.domain.formats import DatasetFormat, DatasetSpec
from largeforge.domain.validation import DatasetPolicyError, TooLong, ValidationPolicy
from tests.fakes import FakeEncoder
from tests.unit.test_formats import SAMPLES

prepare = PrepareDataset(FileRowSource())


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v) if not isinstance(v, str) else v for k, v in row.items()}
                )
    elif suffix == "":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    return path


def variants(fmt: DatasetFormat) -> list[dict[str, Any]]:
    base = SAMPLES[fmt]
    out = []
    for i in range(3):
        row = json.loads(json.dumps(base).replace("yo", f"yo {i}").replace('"3"', f'"3 {i}"'))
        row = json.loads(json.dumps(row).replace("Once upon", f"Once {i} upon"))
        row = json.loads(json.dumps(row).replace("about rain", f"about rain {i}"))
        out.append(row)
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv", ""])
@pytest.mark.parametrize("fmt", list(DatasetFormat))
def test_every_format_from_every_file_type(tmp_path: Path, suffix: str, fmt: DatasetFormat) -> None:
    path = write(tmp_path / f"data{suffix}", variants(fmt))
    result = prepare.execute(DatasetSpec(str(path)))
    assert result.report.format == fmt.value, result.report
    assert result.report.detection.startswith("detected")
    assert result.report.issues == ()
    assert len(result.records) == 3


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv", ""])
def test_every_file_type_through_the_cli(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.main import main

    for fmt in DatasetFormat:
        path = write(tmp_path / f"{fmt.value}{suffix}", variants(fmt))
        assert main(["data", "validate", str(path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["format"], report["kept"]) == (fmt.value, 3)


def test_explicit_format_and_column_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path / "qa.jsonl", [{"q": f"question {i}", "a": f"answer {i}"} for i in range(4)]
    )
    spec = DatasetSpec(str(path), DatasetFormat.ALPACA, (("instruction", "q"), ("output", "a")))
    result = prepare.execute(spec)
    assert len(result.records) == 4
    assert result.report.detection == "given"


def test_undetectable_format_names_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.jsonl", [{"q": "x", "a": "y"}])
    with pytest.raises(DatasetError, match=r"cannot detect the format.*set `format:`"):
        prepare.execute(DatasetSpec(str(path)))


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset file not found: nope\.jsonl"):
        prepare.execute(DatasetSpec("nope.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        prepare.execute(DatasetSpec(str(tmp_path / "data.txt")))


def test_bundled_sample_is_clean() -> None:
    result = prepare.execute(DatasetSpec("sample"), encoder=FakeEncoder())
    assert sample_dataset_path().is_file()
    assert result.report.issues == ()
    assert 300 <= len(result.records) <= 500


PLANTED = [
    ("{not json", "invalid_json", None),
    ({"messages": [{"role": "user", "content": "q"}]}, "bad_turn_order", "messages"),
    ({"conversations": []}, "missing_field", "messages"),
    (
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
        "wrong_type",
        "messages[0].content",
    ),
    (
        {"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "unknown_role",
        "messages[0].role",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        "empty_assistant",
        "messages",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "bad_turn_order",
        "messages",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "long " * 40},
                {"role": "assistant", "content": "a"},
            ]
        },
        "too_long",
        None,
    ),
    (
        {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]},
        "duplicate",
        None,
    ),
]


def planted_file(tmp_path: Path) -> Path:
    good = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(20)
    ]
    lines = [json.dumps(r) for r in good]
    lines += [row if isinstance(row, str) else json.dumps(row) for row, _, _ in PLANTED]
    path = tmp_path / "planted.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_planted_bad_rows_are_each_reported_with_line_and_reason(tmp_path: Path) -> None:
    path = planted_file(tmp_path)
    result = prepare.execute(
        DatasetSpec(str(path), DatasetFormat.MESSAGES), encoder=FakeEncoder(), max_length=32
    )
    issues = result.report.issues
    assert [(i.line, i.kind, i.field) for i in issues] == [
        (21 + n, kind, field) for n, (_, kind, field) in enumerate(PLANTED)
    ]
    assert all(i.reason and i.action.value == "skipped" for i in issues)
    assert issues[-1].reason == "duplicate of line 1"
    assert len(result.records) == 20
    with pytest.raises(DatasetPolicyError, match=r"9 of 29 rows skipped"):
        enforce_policy([result], ValidationPolicy())
    enforce_policy([result], ValidationPolicy(max_skip_fraction=0.5))


def test_truncation_policy_keeps_long_rows_and_says_so(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a " * 50},
            ]
        }
    ]
    path = write(tmp_path / "long.jsonl", rows)
    result = prepare.execute(
        DatasetSpec(str(path)), ValidationPolicy(too_long=TooLong.TRUNCATE), FakeEncoder(), 10
    )
    (issue,) = result.report.issues
    assert (issue.kind, issue.action.value) == ("too_long", "truncated")
    (encoded,) = result.encoded
    assert encoded is not None
    assert encoded.length == 10
