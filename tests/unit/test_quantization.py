"""QuantizationSpec, the group-size pre-check and the QuantizeModel use case with fakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from largeforge.application.data import PrepareDataset
from largeforge.application.quantization import QuantizeModel
from largeforge.domain.errors import BackendUnavailableError, ConfigError
from largeforge.domain.quantization import (
    QuantizationMethod,
    QuantizationSpec,
    check_group_size,
    valid_group_sizes,
)
from tests.conftest import messages_row
from tests.fakes import FakeEncoderFactory, FakeModelResolver, InMemoryRowSource

SMOLLM2 = {"model.layers.0.self_attn.q_proj": 576, "model.layers.0.mlp.down_proj": 1536}
GPTQ = QuantizationMethod.GPTQ


def test_spec_validation_and_scheme_names() -> None:
    assert QuantizationSpec(GPTQ).scheme == "W4A16_ASYM"
    assert QuantizationSpec(GPTQ, bits=8, symmetric=True).scheme == "W8A16"
    with pytest.raises(ConfigError, match="bits must be 4 or 8"):
        QuantizationSpec(GPTQ, bits=3)
    with pytest.raises(ConfigError, match="group_size"):
        QuantizationSpec(GPTQ, group_size=0)


def test_group_size_that_does_not_divide_a_layer_names_the_layer_and_the_fix() -> None:
    assert valid_group_sizes(SMOLLM2.values()) == [32, 64]
    with pytest.raises(ConfigError) as info:
        check_group_size(QuantizationSpec(GPTQ, group_size=128), SMOLLM2)
    message = str(info.value)
    assert "does not divide the input width 576" in message
    assert "q_proj" in message
    assert message.endswith("use --group-size 64")
    check_group_size(QuantizationSpec(GPTQ, group_size=64), SMOLLM2)
    check_group_size(QuantizationSpec(GPTQ, group_size=-1), SMOLLM2)
    with pytest.raises(ConfigError, match="--group-size -1"):
        check_group_size(QuantizationSpec(GPTQ, group_size=32), {"odd": 100})


class FakeQuantizer:
    engine = "fake-engine 1.0"

    def __init__(self, missing: bool = False) -> None:
        self.missing = missing
        self.calls: list[tuple[str, QuantizationSpec, int]] = []

    def check(self, method: QuantizationMethod) -> None:
        if self.missing:
            raise BackendUnavailableError("fake engine missing: pip install fake")

    def quantize(
        self, model_dir: str, spec: QuantizationSpec, calibration: Sequence[Sequence[int]],
        output_dir: str,
    ) -> list[str]:  # fmt: skip
        self.calls.append((model_dir, spec, len(calibration)))
        assert all(len(sample) <= spec.max_seq_length for sample in calibration)
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"q" * 300)
        return ["fake note"]


class FakeInspector:
    def __init__(self, widths: dict[str, int], architecture: str = "LlamaForCausalLM") -> None:
        self.widths = widths
        self.arch = architecture

    def architecture(self, model_dir: str) -> str:
        return self.arch

    def linear_widths(self, model_dir: str, ignore: Sequence[str]) -> dict[str, int]:
        return self.widths

    def weights_bytes(self, model_dir: str) -> int:
        return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


class FakePerplexity:
    def perplexity(
        self, model_dir: str, texts: Sequence[str], max_length: int
    ) -> tuple[float, int]:
        return (10.0 if model_dir.endswith("model") else 10.5), 1234


def use_case(
    tmp_path: Path, quantizer: FakeQuantizer, widths: dict[str, int] | None = None,
    architecture: str = "LlamaForCausalLM",
) -> QuantizeModel:  # fmt: skip
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.safetensors").write_bytes(b"w" * 1000)
    rows = [messages_row(f"question {i}", f"answer {i} " * 50) for i in range(10)]
    return QuantizeModel(
        resolver=FakeModelResolver({"m": str(model_dir)}),
        quantizers={GPTQ: lambda: quantizer, QuantizationMethod.AWQ: lambda: quantizer},
        inspector=FakeInspector(widths or SMOLLM2, architecture),
        evaluator=FakePerplexity(),
        prepare=PrepareDataset(InMemoryRowSource({"sample": rows})),
        encoders=FakeEncoderFactory(),
        held_out=lambda: ["held out text"],
    )


def test_quantize_reports_size_and_perplexity_and_writes_the_report(tmp_path: Path) -> None:
    quantizer = FakeQuantizer()
    spec = QuantizationSpec(GPTQ, group_size=64, num_samples=4, max_seq_length=32)
    out = tmp_path / "quant"
    report = use_case(tmp_path, quantizer).execute("m", spec, str(out))
    assert quantizer.calls[0][2] == 4
    assert report.size_ratio == pytest.approx(0.3)
    assert report.perplexity_ratio == pytest.approx(1.05)
    assert report.engine == "fake-engine 1.0"
    saved = json.loads((out / "quantization_report.json").read_text())
    assert saved["perplexity_ratio"] == pytest.approx(1.05)
    assert (
        "| perplexity (1234 held-out tokens) | 10.000 | 10.500 | 1.050 |"
        in (out / "quantization_report.md").read_text()
    )


@pytest.mark.parametrize(
    ("quantizer", "kwargs", "error", "match"),
    [
        (FakeQuantizer(missing=True), {}, BackendUnavailableError, "pip install fake"),
        (FakeQuantizer(), {"architecture": "BertModel"}, ConfigError, "not supported"),
        (FakeQuantizer(), {"widths": {"x": 576}}, ConfigError, "use --group-size 64"),
    ],
)
def test_bad_input_fails_before_any_quantization(
    tmp_path: Path, quantizer: FakeQuantizer, kwargs: dict[str, Any], error: type, match: str
) -> None:
    spec = QuantizationSpec(GPTQ, group_size=128)
    with pytest.raises(error, match=match):
        use_case(tmp_path, quantizer, **kwargs).execute("m", spec, str(tmp_path / "out"))
    assert quantizer.calls == []


def test_unknown_method_and_non_empty_output_are_refused(tmp_path: Path) -> None:
    quantizer = FakeQuantizer()
    case = use_case(tmp_path, quantizer)
    case._quantizers = {GPTQ: lambda: quantizer}  # an install with GPTQ only
    with pytest.raises(ConfigError, match="unknown quantization method 'awq'; valid: gptq"):
        case.check("m", QuantizationSpec(QuantizationMethod.AWQ, group_size=64), "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        case.check("m", QuantizationSpec(GPTQ, group_size=64), str(busy))
