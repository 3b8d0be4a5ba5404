"""PrepareDataset over in-memory rows: nothing is lost, mixing honours counts and weights."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.application.data import PrepareDataset, mix
from largeforge.domain import DatasetError
from largeforge.domain.formats import DatasetFormat, DatasetSpec, detect_format
from largeforge.domain.validation import Dedupe, ValidationPolicy
from tests.conftest import messages_row
from tests.fakes import FakeEncoder, InMemoryRowSource
from tests.unit.test_formats import json_values


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(json_values | st.just("{broken"), min_size=1, max_size=8),
    fmt=st.none() | st.sampled_from(list(DatasetFormat)),
)
def test_every_row_becomes_a_record_or_an_issue(rows: list[Any], fmt: DatasetFormat | None) -> None:
    source = InMemoryRowSource({"rows": rows})
    spec = DatasetSpec("rows", fmt)
    decodable = [r for r in rows if not isinstance(r, str)]
    if fmt is None and decodable and detect_format(decodable).format is None:
        with pytest.raises(DatasetError, match="cannot detect the format"):
            PrepareDataset(source).execute(spec)
        return
    prepared = PrepareDataset(source).execute(spec, ValidationPolicy(), FakeEncoder(), 64)
    report = prepared.report
    assert report.rows == len(rows)
    assert report.kept + report.dropped == len(rows)
    assert len(prepared.records) == len(prepared.encoded) == report.kept
    lines = [issue.line for issue in report.issues]
    assert lines == sorted(lines)
    assert all(issue.reason and issue.kind for issue in report.issues)


def test_normalized_dedupe_catches_case_and_spacing() -> None:
    rows = [messages_row("Hello  World", "Hi"), messages_row("hello world", "hi")]
    source = InMemoryRowSource({"rows": rows})
    exact = PrepareDataset(source).execute(DatasetSpec("rows"))
    assert exact.report.kept == 2
    normalized = PrepareDataset(source).execute(
        DatasetSpec("rows"), ValidationPolicy(dedupe=Dedupe.NORMALIZED)
    )
    (issue,) = normalized.report.issues
    assert (issue.line, issue.kind, issue.reason) == (2, "duplicate", "duplicate of line 1")


def test_mix_by_weight_keeps_the_total_and_the_shares() -> None:
    source = InMemoryRowSource(
        {
            "a": [messages_row(f"a{i}", "x") for i in range(30)],
            "b": [messages_row(f"b{i}", "y") for i in range(10)],
        }
    )
    prepare = PrepareDataset(source)
    mixed = mix(
        [
            prepare.execute(DatasetSpec("a", weight=1.0)),
            prepare.execute(DatasetSpec("b", weight=1.0)),
        ],
        seed=0,
    )
    sources = [record.source.split(":")[0] for record, _ in mixed]
    assert len(mixed) == 40
    assert sources.count("a") == sources.count("b") == 20  # b's rows repeat to fill its share
    again = mix(
        [
            prepare.execute(DatasetSpec("a", weight=1.0)),
            prepare.execute(DatasetSpec("b", weight=1.0)),
        ],
        seed=0,
    )
    assert [r.source for r, _ in again] == [r.source for r, _ in mixed]
