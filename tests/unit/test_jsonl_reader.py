"""JSONL reading: Alpaca and OpenAI-messages rows, every bad row reported with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from largeforge.adapters.data.jsonl import JsonlDatasetReader, sample_dataset_path
from largeforge.domain import DatasetError, Role


def write_rows(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "data.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_messages_and_alpaca_rows(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path,
        [
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "be brief"},
        ],
    )
    data = JsonlDatasetReader().read(str(path))
    assert data.format == "alpaca+messages"
    assert data.issues == ()
    alpaca = data.examples[1]
    assert [m.role for m in alpaca.conversation.messages] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
    ]
    assert alpaca.prompt[-1].content == "Add\n\n1 and 2"
    assert alpaca.completion.content == "3"
    assert alpaca.source == "data.jsonl:2"


@pytest.mark.parametrize(
    ("row", "reason", "field"),
    [
        ("{not json", "invalid JSON", None),
        ([1, 2], "must be a JSON object", None),
        ({"text": "x"}, "unknown row format", None),
        ({"messages": []}, "non-empty list", "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'", "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": 3}]},
            "content must be a string",
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
            "empty assistant turn",
            "messages[1].content",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            "end with an assistant turn",
            "messages",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "alternate", "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "only come first",
            "messages",
        ),
        ({"instruction": "x"}, "'output' must be a string", "output"),
        ({"instruction": "x", "output": ""}, "empty output", "output"),
        ({"instruction": "x", "output": "y", "input": 5}, "'input' must be a string", "input"),
    ],
)
def test_bad_rows_are_skipped_and_reported(
    tmp_path: Path, row: object, reason: str, field: str | None
) -> None:
    good = {"instruction": "a", "output": "b"}
    path = write_rows(tmp_path, [good, row, good])
    data = JsonlDatasetReader().read(str(path))
    assert len(data.examples) == 2
    (issue,) = data.issues
    assert issue.line == 2
    assert reason in issue.reason
    assert issue.field == field
    assert str(issue).startswith("data.jsonl:2")
    assert data.rows_seen == 3


def test_missing_file_names_it() -> None:
    with pytest.raises(DatasetError, match=r"dataset file not found: nope\.jsonl"):
        JsonlDatasetReader().read("nope.jsonl")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.csv'"):
        JsonlDatasetReader().read(str(path))


def test_bundled_sample_is_clean_and_large_enough() -> None:
    data = JsonlDatasetReader().read("sample")
    assert sample_dataset_path().is_file()
    assert data.issues == ()
    assert 300 <= len(data.examples) <= 500
    assert len({e.conversation for e in data.examples}) == len(data.examples)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["messages", "role", "content", "instruction", "output", "input", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(json_values, min_size=1, max_size=6))
def test_every_row_becomes_an_example_or_an_issue(tmp_path: Path, rows: list[object]) -> None:
    path = write_rows(tmp_path, [json.dumps(r) for r in rows])
    data = JsonlDatasetReader().read(str(path))
    assert data.rows_seen == len(rows)
    assert sorted(i.line for i in data.issues) == sorted(set(i.line for i in data.issues))
    for example in data.examples:
        assert example.completion.role is Role.ASSISTANT
