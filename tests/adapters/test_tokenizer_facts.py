"""`HfTokenizerFactsReader` on the tiny model: real facts, and planted mismatches found by field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from largeforge.adapters.hf.tokenizer_facts import HfTokenizerFactsReader
from largeforge.domain.errors import ConfigError
from largeforge.domain.fidelity import compare_facts


@pytest.fixture
def copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def rewrite(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_facts_of_the_chatml_tokenizer(tiny_model_dir: Path) -> None:
    facts = HfTokenizerFactsReader().read(str(tiny_model_dir))
    assert (facts.turn_end_token, facts.turn_end_token_id) == ("<|im_end|>", 2)
    assert (facts.eos_token, facts.eos_token_id) == ("<|im_end|>", 2)
    assert facts.generation_eos_token_ids == (2,)
    assert facts.special_token_ids["<|im_start|>"] == 1
    assert facts.chat_template is not None
    assert "<|im_start|>" in facts.chat_template
    assert facts.name_of(0) == "<|endoftext|>"


def test_an_unchanged_copy_is_equal(tiny_model_dir: Path, copy: Path) -> None:
    reader = HfTokenizerFactsReader()
    assert compare_facts(reader.read(str(tiny_model_dir)), reader.read(str(copy))) == []


def test_planted_generation_eos_is_found(tiny_model_dir: Path, copy: Path) -> None:
    reader = HfTokenizerFactsReader()
    rewrite(copy / "generation_config.json", eos_token_id=0)
    mismatches = compare_facts(reader.read(str(tiny_model_dir)), reader.read(str(copy)))
    assert [m.message for m in mismatches] == [
        "generation_config.eos_token_id is 0 (<|endoftext|>) but training ended turns with "
        "2 (<|im_end|>)"
    ]


def test_planted_chat_template_is_found(tiny_model_dir: Path, copy: Path) -> None:
    reader = HfTokenizerFactsReader()
    template = copy / "chat_template.jinja"  # where transformers 5 saves it
    assert template.is_file()
    template.write_text(
        template.read_text().replace("'<|im_start|>' + message['role']", "'### ' + message['role']")
    )
    mismatches = compare_facts(reader.read(str(tiny_model_dir)), reader.read(str(copy)))
    assert [m.field for m in mismatches] == ["chat_template"]
    assert "first difference at character" in mismatches[0].message


def test_planted_missing_special_token_is_found(tiny_model_dir: Path, copy: Path) -> None:
    reader = HfTokenizerFactsReader()
    tokenizer = copy / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|im_start|>"]
    tokenizer.write_text(json.dumps(data))
    mismatches = compare_facts(reader.read(str(tiny_model_dir)), reader.read(str(copy)))
    assert [m.message for m in mismatches] == ["special_tokens: <|im_start|> (id 1) is missing"]


def test_run_records_and_artifacts(tiny_model_dir: Path, tmp_path: Path) -> None:
    reader = HfTokenizerFactsReader()
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    assert reader.recorded(str(run)) is None
    assert reader.adapter_dir(str(run)) is None
    (run / "adapter" / "adapter_config.json").write_text("{}")
    shutil.copytree(tiny_model_dir, run / "merged")
    shutil.copytree(tiny_model_dir, run / "quantized-gptq-w4")
    rewrite(run / "quantized-gptq-w4" / "config.json", quantization_config={"quant_method": "x"})
    facts = reader.read(str(tiny_model_dir))
    (run / "tokenizer_facts.json").write_text(json.dumps(facts.to_dict()))

    assert reader.recorded(str(run)) == facts
    assert reader.adapter_dir(str(run)) == str(run / "adapter")
    assert reader.artifacts(str(run)) == [str(run / "merged"), str(run / "quantized-gptq-w4")]


def test_a_directory_without_a_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load its tokenizer"):
        HfTokenizerFactsReader().read(str(tmp_path))
