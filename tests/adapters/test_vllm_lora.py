"""The LoRA rank the vLLM engine reserves comes from the adapters' own configs, never a default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from largeforge.adapters.vllm.lora import max_lora_rank
from largeforge.domain.errors import ConfigError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's MaxLoRARanks


def adapter(root: Path, name: str, config: object) -> str:
    path = root / name
    path.mkdir()
    text = config if isinstance(config, str) else json.dumps(config)
    (path / "adapter_config.json").write_text(text)
    return str(path)


def test_the_rank_fits_the_largest_adapter(tmp_path: Path) -> None:
    small = adapter(tmp_path, "small", {"r": 4})
    large = adapter(tmp_path, "large", {"r": 48})
    assert max_lora_rank({"small": small}, VLLM_RANKS) == 8
    assert max_lora_rank({"small": small, "large": large}, VLLM_RANKS) == 64
    assert max_lora_rank({"exact": adapter(tmp_path, "exact", {"r": 32})}, VLLM_RANKS) == 32


def test_a_larger_rank_in_rank_pattern_counts(tmp_path: Path) -> None:
    path = adapter(tmp_path, "mixed", {"r": 8, "rank_pattern": {"q_proj": 128}})
    assert max_lora_rank({"mixed": path}, VLLM_RANKS) == 128


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lora_alpha": 16}, r"has no valid LoRA rank 'r' \(None\)"),
        ({"r": "16"}, r"has no valid LoRA rank 'r' \('16'\)"),
        ({"r": 0}, r"has no valid LoRA rank 'r' \(0\)"),
        ({"r": 8, "rank_pattern": {"q_proj": -1}}, r"has no valid LoRA rank 'r' \(-1\)"),
        ("{not json", r"is not JSON"),
    ],
)
def test_an_unreadable_rank_is_a_config_error(tmp_path: Path, config: object, message: str) -> None:
    path = adapter(tmp_path, "bad", config)
    with pytest.raises(ConfigError, match=rf"LoRA adapter 'bad': .*adapter_config.json {message}"):
        max_lora_rank({"bad": path}, VLLM_RANKS)


def test_a_missing_config_names_the_adapter_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"LoRA adapter 'gone': .*adapter_config.json does not"):
        max_lora_rank({"gone": str(tmp_path / "gone")}, VLLM_RANKS)


def test_a_rank_above_what_vllm_supports_is_a_config_error(tmp_path: Path) -> None:
    path = adapter(tmp_path, "huge", {"r": 1024})
    with pytest.raises(ConfigError, match="LoRA rank 1024 is above the largest vLLM supports"):
        max_lora_rank({"huge": path}, VLLM_RANKS)
