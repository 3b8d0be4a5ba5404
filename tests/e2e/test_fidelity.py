"""`largeforge eval --fidelity`'s check end to end on a run of the tiny model: the real merged
model is equal (served through the HTTP API == transformers generate; adapter beside its base ==
merged), planted mismatches exit 1 with one line naming the field."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from largeforge.domain.fidelity import TokenizerFacts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A succeeded run of the tiny model: run.json, a LoRA adapter, the merged model and the
    record of the tokenizer training used (as `run-training` leaves them)."""
    from largeforge.adapters.hf.tokenizer_facts import HfTokenizerFactsReader
    from largeforge.adapters.peft.merge import PeftLoraMerger
    from largeforge.adapters.storage.runs import FilesystemRunStore
    from largeforge.config import RunConfig
    from largeforge.domain.training import TrainingRun
    from tests.support import build_tiny_adapter

    root = tmp_path_factory.mktemp("runs")
    plan = RunConfig(model=str(tiny_model_dir), dataset="sample").to_plan()
    run = TrainingRun(run_id="fidelity", plan=plan, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    store = FilesystemRunStore(root)
    directory = Path(store.create(run, {}))
    facts = HfTokenizerFactsReader().read(str(tiny_model_dir))
    store.write_json(run.run_id, "tokenizer_facts.json", facts.to_dict())
    from transformers import AutoTokenizer

    build_tiny_adapter(tiny_model_dir, directory / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(
        directory / "adapter"
    )  # as training
    PeftLoraMerger().merge(
        str(tiny_model_dir), str(directory / "adapter"), str(directory / "merged")
    )
    return directory


def errors(stderr: str) -> list[str]:
    """The `error:` lines (log lines of other tests' configured loggers may share stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def planted(run_dir: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(run_dir, tmp_path / "fidelity", symlinks=True))
    return copy


def test_the_real_merged_model_is_equal(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    assert check_fidelity(str(run_dir), output=tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "error:" not in err
    assert f"ok: static facts: {run_dir / 'merged'}" in out
    assert f"ok: served_vs_generate: {run_dir / 'merged'}" in out
    assert f"ok: adapter_vs_merged: {run_dir / 'adapter'}" in out
    report = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == [
        "static facts",
        "served_vs_generate",
        "adapter_vs_merged",
    ]


def test_a_planted_generation_eos_exits_1_naming_the_field(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    run = planted(run_dir, tmp_path)
    config = run / "merged" / "generation_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"eos_token_id": 0}))

    assert check_fidelity(str(run), output=None, dynamic=False) == 1
    out, err = capsys.readouterr()
    assert errors(err) == [
        "error: generation_config.eos_token_id is 0 (<|endoftext|>) but training ended turns "
        "with 2 (<|im_end|>)"
    ]
    assert "Traceback" not in out + err


def test_planted_template_and_special_token_each_name_their_field(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    run = planted(run_dir, tmp_path)
    template = run / "merged" / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    tokenizer = run / "merged" / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|im_start|>"]
    tokenizer.write_text(json.dumps(data))

    assert check_fidelity(str(run / "merged"), output=tmp_path / "out", dynamic=False) == 1
    _, err = capsys.readouterr()
    lines = errors(err)
    assert len(lines) == 2
    assert lines[0].startswith("error: chat_template differs from the one training used")
    assert lines[1] == "error: special_tokens: <|im_start|> (id 1) is missing"
    report = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert [m["field"] for m in report["checks"][0]["mismatches"]] == [
        "chat_template",
        "special_tokens",
    ]


def test_a_run_without_a_record_is_compared_with_its_base_model(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    run = planted(run_dir, tmp_path)
    (run / "tokenizer_facts.json").unlink()
    assert check_fidelity(str(run), output=None, dynamic=False) == 0
    assert "ok: static facts" in capsys.readouterr().out


def test_the_record_is_what_the_tokenizer_says(run_dir: Path, tiny_model_dir: Path) -> None:
    recorded = json.loads((run_dir / "tokenizer_facts.json").read_text())
    facts = TokenizerFacts.from_dict(recorded)
    assert facts.turn_end_token == "<|im_end|>"
    assert facts.generation_eos_token_ids == (2,)


def test_a_model_outside_a_run_is_held_to_its_own_eos_rule(
    tiny_model_dir: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.entrypoints.cli.fidelity import check_fidelity

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    assert check_fidelity(str(model), record=run_dir, dynamic=False) == 0
    config = model / "generation_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"eos_token_id": 0}))
    capsys.readouterr()

    assert check_fidelity(str(model), dynamic=False) == 1
    assert errors(capsys.readouterr().err) == [
        "error: generation_config.eos_token_id is 0 (<|endoftext|>) but training ended turns "
        "with 2 (<|im_end|>)"
    ]


def test_merge_and_quantize_check_what_they_wrote(
    tiny_model_dir: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from largeforge.config import Settings
    from largeforge.container import Container
    from largeforge.entrypoints.cli.fidelity import static_check_after

    container = Container.from_settings(Settings())
    merged = str(run_dir / "merged")
    assert static_check_after(container, merged, run_dir=run_dir).ok
    assert "equal what training used" in capsys.readouterr().out

    output = Path(shutil.copytree(tiny_model_dir, tmp_path / "quantized"))
    (output / "chat_template.jinja").write_text("{{ messages }}")
    check = static_check_after(container, str(output), source_dir=str(tiny_model_dir))
    assert [m.field for m in check.mismatches][:1] == ["chat_template"]
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: fidelity: chat_template differs")
