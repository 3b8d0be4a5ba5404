"""llm-compressor AWQ and GPTQ on the tiny random Llama: the checkpoint is compressed-tensors,
reloads in transformers, and the use case reports both perplexities."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from largeforge.adapters.quantization.inspect import HfModelInspector, ignored
from largeforge.container import Container
from largeforge.domain.errors import ConfigError
from largeforge.domain.quantization import QuantizationMethod, QuantizationSpec

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llmcompressor") is None, reason="the quant extra is not installed"
)


def test_inspector_reads_widths_without_loading_weights(tiny_model_dir: Path) -> None:
    inspector = HfModelInspector()
    assert inspector.architecture(str(tiny_model_dir)) == "LlamaForCausalLM"
    widths = inspector.linear_widths(str(tiny_model_dir), ["lm_head"])
    assert widths["model.layers.0.self_attn.q_proj"] == 64
    assert widths["model.layers.1.mlp.down_proj"] == 128
    assert "lm_head" not in widths
    assert ignored("model.layers.0.mlp.gate_proj", ["re:.*mlp.gate_proj"])
    assert not ignored("model.layers.0.mlp.up_proj", ["re:.*mlp.gate_proj", "lm_head"])


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_quantizes_the_tiny_model_and_reports(
    method: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = QuantizationSpec(QuantizationMethod(method), group_size=32, num_samples=8,
                            max_seq_length=64)  # fmt: skip
    out = tmp_path / method
    report = Container.from_settings().quantize_model().execute(str(tiny_model_dir), spec, str(out))
    config = json.loads((out / "config.json").read_text())
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 32, False)
    assert config["quantization_config"]["ignore"] == ["lm_head"]
    assert (out / "tokenizer.json").is_file()
    assert report.calibration_samples == 8
    assert report.bytes_after < report.bytes_before
    assert report.perplexity_before > 0
    assert report.perplexity_after > 0
    assert (
        (out / "quantization_report.md")
        .read_text()
        .startswith(f"# Quantization report: {method.upper()} W4A16_ASYM")
    )


def test_a_bad_group_size_fails_before_loading(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = QuantizationSpec(QuantizationMethod.GPTQ, group_size=128)
    with pytest.raises(ConfigError, match="use --group-size 64"):
        Container.from_settings().quantize_model().check(str(tiny_model_dir), spec, str(tmp_path))


def test_a_missing_engine_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from largeforge.adapters.quantization.llm_compressor import LlmCompressorQuantizer
    from largeforge.domain.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "llmcompressor", None)  # find_spec now answers None
    with pytest.raises(BackendUnavailableError, match=r"pip install 'largeforge\[quant\]'"):
        LlmCompressorQuantizer().check(QuantizationMethod.AWQ)
