"""Row sources: JSON Lines, JSON arrays, Parquet, CSV, `datasets` directories and hub ids."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from largeforge.application.ports import RawRow
from largeforge.domain.errors import DatasetError

SAMPLE_DATASET = "sample"
"""Name of the bundled sample dataset (Python documentation Q&A, PSF licensed)."""

BUNDLED = {
    SAMPLE_DATASET: "sample_chat.jsonl",
    "sample-preferences": "sample_preferences.jsonl",
    "sample-tools": "sample_tools.jsonl",
    "sample-unpaired": "sample_unpaired.jsonl",
    "sample-arithmetic": "sample_arithmetic.jsonl",
}
"""Bundled datasets by name: the chat sample, preference pairs derived from it, tool-use
conversations over eight tools (`scripts/make_tool_sample.py`; held out: `tools` eval set),
KTO's labelled completions from the pairs and GRPO's arithmetic prompts with reference answers
(`scripts/build_sample_rl.py`)."""

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")


def sample_dataset_path(name: str = SAMPLE_DATASET) -> Path:
    """Path of a bundled dataset (a name of `BUNDLED`) inside the installed package."""
    return Path(str(resources.files("largeforge.resources.data") / BUNDLED[name]))


class FileRowSource:
    """`RowSource` over local files, `save_to_disk` directories and (reachable) hub datasets.

    Row numbers are 1-based file lines for JSON Lines and CSV (the header is line 1), and 1-based
    positions for JSON arrays, Parquet and `datasets`.
    """

    def name(self, source: str) -> str:
        if source in BUNDLED:
            return BUNDLED[source]
        path = Path(source)
        return path.name if path.exists() else source

    def rows(self, source: str) -> Iterator[RawRow]:
        path = sample_dataset_path(source) if source in BUNDLED else Path(source).expanduser()
        if path.is_dir():
            return _datasets_dir(path)
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in {".jsonl", ".ndjson"}:
                return _jsonl(path)
            if suffix == ".json":
                return _json_array(path)
            if suffix == ".parquet":
                return _parquet(path)
            if suffix == ".csv":
                return _csv(path)
            raise DatasetError(
                f"{source}: unsupported file type '{path.suffix}' (use {', '.join(SUFFIXES)})"
            )
        if _looks_like_hub_id(source):
            return _hub(source)
        raise DatasetError(f"dataset file not found: {source}")


def _jsonl(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield RawRow(line_no, json.loads(line))
            except json.JSONDecodeError as exc:
                yield RawRow(line_no, error=f"invalid JSON: {exc.msg} (column {exc.colno})")


def _json_array(path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path.name}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}
        lists = [
            v for k, v in data.items() if isinstance(v, list) and k in {"data", "train", "rows"}
        ]
        data = lists[0] if lists else data
    if not isinstance(data, list):
        raise DatasetError(f"{path.name}: expected a JSON array of rows (or use .jsonl)")
    for index, row in enumerate(data, start=1):
        yield RawRow(index, row)


def _parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DatasetError(f"{path.name}: cannot read Parquet: {exc}") from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield RawRow(index, row)


def _decode_cell(value: str) -> Any:
    """CSV cells holding JSON lists/objects (e.g. a `messages` column) are decoded."""
    stripped = value.strip()
    if stripped[:1] in {"[", "{"}:
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return value
    return value


def _csv(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            line = reader.line_num
            if None in row:
                yield RawRow(line, error="more cells than header columns")
                continue
            yield RawRow(
                line, {k: _decode_cell(v) if v is not None else None for k, v in row.items()}
            )


def _datasets_dir(path: Path) -> Iterator[RawRow]:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not a directory saved with `save_to_disk`") from None
    if isinstance(loaded, DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    for index, row in enumerate(loaded, start=1):
        yield RawRow(index, dict(row))


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~", "/"))


def _hub(repo_id: str) -> Iterator[RawRow]:
    from huggingface_hub import constants

    from largeforge.adapters.models.resolver import hub_reachable

    if constants.HF_HUB_OFFLINE or not hub_reachable():
        raise DatasetError(
            f"dataset '{repo_id}' not found locally and the Hugging Face hub is unreachable"
        )
    from datasets import load_dataset

    try:
        loaded = load_dataset(repo_id, split="train")
    except Exception as exc:
        raise DatasetError(f"dataset '{repo_id}': {type(exc).__name__}: {exc}") from None
    for index, row in enumerate(loaded, start=1):
        yield RawRow(index, dict(row))
