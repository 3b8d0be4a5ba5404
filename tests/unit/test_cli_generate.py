"""`largeforge data generate sft|preferences` over a fake engine: prompt-only seeds and prompts,
rejected rows named by line, generations that keep nothing explained, output that validates."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from largeforge.config import Settings
from largeforge.container import Container
from largeforge.domain import FinishReason, Message, SamplingParams
from largeforge.domain.generation import TokenStep
from largeforge.entrypoints.cli import data as data_cli
from largeforge.entrypoints.cli.main import main
from tests.fakes import FakeInferenceEngine

INSTRUCTIONS = [
    "Write a haiku about rain.",
    "List three uses of a paperclip.",
    "Explain why the sky looks blue in one sentence.",
    "Suggest a name for a grey cat.",
]


class LengthScorer:
    async def score(self, prompt: Sequence[Message], response: str) -> float:
        return float(len(response))


class SilentEngine(FakeInferenceEngine):
    """Answers every request with nothing."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        yield TokenStep(0, "", None, FinishReason.STOP)


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[FakeInferenceEngine]:
    """Every `data generate` run gets the real container with a fake engine and scorer."""
    made: list[FakeInferenceEngine] = []

    def container() -> Container:
        built = Container.from_settings(Settings())

        def make(model: str) -> FakeInferenceEngine:
            made.append(FakeInferenceEngine(model, context_window=4096))
            return made[-1]

        built.generation_engine.override(providers.Callable(make))
        built.response_scorer.override(providers.Callable(lambda engine: LengthScorer()))
        return built

    monkeypatch.setattr(data_cli, "_container", container)
    return made


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_from_instruction_only_seeds_writes_rows_that_validate(
    tmp_path: Path, engines: list[FakeInferenceEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": t} for t in INSTRUCTIONS])
    out = tmp_path / "sft.jsonl"
    assert main(["data", "generate", "sft", "-o", str(out), "--seeds", str(seeds),
                 "--count", "3"]) == 0  # fmt: skip
    assert "wrote 3 sft rows" in capsys.readouterr().out
    assert engines[0].closed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    assert main(["data", "validate", str(out), "--json", "--on-error", "fail"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["format"], report["kept"], report["rows"]) == ("messages", 3, 3)


def test_preferences_from_prompt_only_rows_write_pairs_that_validate(
    tmp_path: Path, engines: list[FakeInferenceEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {"instruction": INSTRUCTIONS[0]},
            {"prompt": INSTRUCTIONS[1], "reference": "to hold paper"},
            {"messages": [{"role": "user", "content": INSTRUCTIONS[2]}]},
        ],
    )
    out = tmp_path / "prefs.jsonl"
    assert main(["data", "generate", "preferences", "-o", str(out), "--prompts", str(prompts),
                 "--samples", "3"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"][-1]["content"] for r in rows] == INSTRUCTIONS[:3]
    assert all(r["chosen"] != r["rejected"] for r in rows)
    capsys.readouterr()
    assert main(["data", "validate", str(out), "--json", "--on-error", "fail"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["format"], report["kept"]) == ("preference", 3)


def test_a_seed_file_without_a_usable_prompt_is_one_line_naming_the_first_bad_row(
    tmp_path: Path, engines: list[FakeInferenceEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        ["{not json\n", {"prompt": ""}, {"messages": [{"role": "system", "content": "s"}]}],
    )
    for command in (["sft", "--seeds"], ["preferences", "--prompts"]):
        code = main(["data", "generate", command[0], "-o", str(tmp_path / "o.jsonl"),
                     command[1], str(seeds)])  # fmt: skip
        assert code == 2
        err = capsys.readouterr().err.splitlines()
        assert [line for line in err if line.startswith("error")] == [
            "error: seeds.jsonl: no usable prompt in 3 rows; first rejected: line 1: invalid "
            "JSON: Expecting property name enclosed in double quotes (column 2)"
        ]
    assert engines == []  # refused before any model was loaded


def test_bad_prompt_rows_are_named_by_line_and_reason(
    tmp_path: Path, engines: list[FakeInferenceEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"instruction": INSTRUCTIONS[0]},
            "{broken\n",
            {"prompt": "   "},
            {"messages": [{"role": "assistant", "content": "hello"}]},
            {"instruction": INSTRUCTIONS[1]},
        ],
    )
    assert main(["data", "validate", str(seeds), "--format", "prompt", "--json"]) == 1
    issues = json.loads(capsys.readouterr().out)["issues"]
    assert [(i["line"], i["field"], i["kind"]) for i in issues] == [
        (2, None, "invalid_json"),
        (3, "prompt", "empty_prompt"),
        (4, "messages", "no_user_turn"),
    ]
    out = tmp_path / "sft.jsonl"
    assert main(["data", "generate", "sft", "-o", str(out), "--seeds", str(seeds),
                 "--count", "1"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "2 of 5 rows are usable prompts (3 rejected" in err
    assert "seeds.jsonl:2: invalid JSON" in err


def test_a_generation_that_keeps_nothing_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    built = Container.from_settings(Settings())
    built.generation_engine.override(providers.Callable(lambda model: SilentEngine(model, 4096)))
    built.response_scorer.override(providers.Callable(lambda engine: LengthScorer()))
    monkeypatch.setattr(data_cli, "_container", lambda: built)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": t} for t in INSTRUCTIONS])
    out = tmp_path / "o.jsonl"
    assert main(["data", "generate", "sft", "-o", str(out), "--seeds", str(seeds),
                 "--count", "2"]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert "error: no sft rows kept: all 8 candidates were rejected (empty_task 8)" in captured.err
    assert main(["data", "generate", "preferences", "-o", str(out), "--prompts", str(seeds)]) == 1
    err = capsys.readouterr().err
    assert "error: no preference rows kept: all 4 candidates were rejected " in err
    assert "(too_few_distinct_answers 4)" in err
