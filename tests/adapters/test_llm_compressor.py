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
from largeforge.domain.quantization import GroupSize, QuantizationMethod, QuantizationSpec
from largeforge.entrypoints.cli.main import app
from tests.conftest import messages_row

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


@pytest.mark.parametrize(
    ("method", "group_size", "expected"),
    [("gptq", "auto", 64), ("awq", 32, 32)],  # the tiny model's widths are 64 and 128
)
def test_quantizes_the_tiny_model_and_reports(
    method: str, group_size: GroupSize, expected: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = QuantizationSpec(QuantizationMethod(method), group_size=group_size, num_samples=8,
                            max_seq_length=64)  # fmt: skip
    out = tmp_path / method
    report = Container.from_settings().quantize_model().execute(str(tiny_model_dir), spec, str(out))
    config = json.loads((out / "config.json").read_text())
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (
        4,
        expected,
        False,
    )
    assert (report.group_size, report.group_size_auto) == (expected, group_size == "auto")
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


def test_the_cli_calibrates_on_the_file_it_is_given(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calibration = tmp_path / "calibration.jsonl"
    rows = [messages_row(f"Calibrate on row {i}.", f"Row {i} it is.") for i in range(3)]
    calibration.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "q"
    args = [
        "quantize",
        str(tiny_model_dir),
        "--method",
        "gptq",
        "--calibration",
        str(calibration),
        "--samples",
        "8",
        "--max-seq-length",
        "64",
        "-o",
        str(out),
    ]
    assert app(args, result_action="return_value") == 0
    report = json.loads((out / "quantization_report.json").read_text())
    # 3 rows in the file; the bundled sample data would have given all 8 samples asked for.
    assert (report["calibration"], report["calibration_samples"]) == (str(calibration), 3)
    assert (report["group_size"], report["group_size_auto"]) == (64, True)
    assert f"- calibration: {calibration} (3 samples)" in capsys.readouterr().out


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
