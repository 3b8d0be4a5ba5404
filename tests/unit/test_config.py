"""Run files: defaults, overrides, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from largeforge.config import RunConfig, load_run_config
from largeforge.domain import ConfigError
from largeforge.domain.training import AdapterKind, DpoOptions, TrainingMethod


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_the_embedded_defaults() -> None:
    config = load_run_config(None)
    assert config.model == "smollm2-135m-instruct"
    assert config.dataset == "sample"
    plan = config.to_plan()
    assert plan.lora.target_modules == ("all-linear",)
    assert plan.max_steps == config.training.max_steps


def test_empty_file_is_a_valid_run(tmp_path: Path) -> None:
    assert load_run_config(write(tmp_path, "")) == RunConfig()


def test_file_values_and_cli_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "model: a/b\ntraining:\n  max_steps: 7\n  learning_rate: 1e-4\n")
    config = load_run_config(path, {"training.max_steps": 3, "output_dir": None})
    assert config.model == "a/b"
    assert config.training.max_steps == 3
    assert config.training.learning_rate == 1e-4
    assert config.output_dir == "runs"


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    message = str(info.value)
    assert "unknown key 'training.lerning_rate'" in message
    assert "did you mean 'training.learning_rate'" in message
    assert str(path) in message
    assert "\n" not in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*did you mean 'model'"):
        load_run_config(write(tmp_path, "modle: x\n"))


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'training.max_steps'.*integer.*'ten'"):
        load_run_config(write(tmp_path, "training:\n  max_steps: ten\n"))


def test_out_of_range_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'lora.rank'.*greater than 0"):
        load_run_config(write(tmp_path, "lora:\n  rank: 0\n"))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: nope\.yaml"):
        load_run_config("nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML at line 2"):
        load_run_config(write(tmp_path, "model: a\n  bad: [\n"))


def test_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_run_config(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    "example", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
)
def test_example_run_files_are_valid(example: Path) -> None:
    plan = load_run_config(example).to_plan()
    assert plan.datasets


def test_dataset_mappings_and_lists(tmp_path: Path) -> None:
    text = (
        "method: dpo\nadapter: full\ndpo: {beta: 0.2}\n"
        "dataset:\n  - sample\n"
        "  - {path: qa.csv, format: alpaca, columns: {instruction: q}, count: 9}\n"
    )
    plan = load_run_config(write(tmp_path, text)).to_plan()
    assert [d.source for d in plan.datasets] == ["sample", "qa.csv"]
    assert plan.datasets[1].column_map == {"instruction": "q"}
    assert plan.datasets[1].count == 9
    assert (plan.method, plan.adapter, plan.dpo.beta) == ("dpo", "full", 0.2)
    assert plan.method is TrainingMethod.DPO
    assert plan.adapter is AdapterKind.FULL


def test_the_dpo_option_group_reaches_the_plan(tmp_path: Path) -> None:
    text = "method: dpo\ndpo: {beta: 0.3, loss_type: ipo, precompute_ref_log_probs: true}\n"
    plan = load_run_config(write(tmp_path, text)).to_plan()
    assert plan.dpo == DpoOptions(beta=0.3, loss_type="ipo", precompute_ref_log_probs=True)


def test_an_unknown_key_in_a_method_group_names_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_run_config(write(tmp_path, "method: dpo\ndpo: {bta: 0.3}\n"))
    message = str(raised.value)
    assert "unknown key 'dpo.bta' (did you mean 'dpo.beta'?)" in message
    assert "valid keys here: beta, loss_type, precompute_ref_log_probs" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lora: {rank: 0}\n", "'lora.rank'"),
        ("training: {learning_rate: -1}\n", "'training.learning_rate'"),
        ("method: ppo\n", "'method'"),
        ("adapter: half\n", "'adapter'"),
        ("dpo: {loss_type: kto}\n", "'dpo.loss_type'"),
        ("dpo: {beta: 0}\n", "'dpo.beta'"),
        ("dataset: {path: x.jsonl, format: csvish}\n", "format"),
        ("validation: {max_skip_fraction: 2}\n", "'validation.max_skip_fraction'"),
        ("training: {packing: maybe}\n", "'training.packing'"),
    ],
)
def test_impossible_settings_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_run_config(write(tmp_path, text))


def test_packing_is_auto_unless_set(tmp_path: Path) -> None:
    assert load_run_config(write(tmp_path, "")).to_plan().packing == "auto"
    assert load_run_config(write(tmp_path, "training: {packing: true}\n")).to_plan().packing is True


def test_dpo_refuses_packing(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, "method: dpo\ntraining: {packing: true}\n"))
    with pytest.raises((ConfigError, ValueError), match="packing applies to SFT only"):
        config.to_plan()
