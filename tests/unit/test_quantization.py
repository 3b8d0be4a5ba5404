"""QuantizationSpec, the group-size pre-check and the QuantizeModel use case with fakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.application.data import PrepareDataset
from largeforge.application.quantization import QuantizeModel
from largeforge.domain.errors import BackendUnavailableError, ConfigError
from largeforge.domain.quantization import (
    AUTO_GROUP_SIZES,
    PER_CHANNEL,
    QuantizationMethod,
    QuantizationSpec,
    auto_group_size,
    check_group_size,
    resolve_group_size,
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


#: Layer widths: multiples of 16 (the widths of real models are, and some fit no auto size).
widths_maps = st.dictionaries(
    st.from_regex(r"model\.layers\.[0-9]\.[a-z_]{1,8}", fullmatch=True),
    st.integers(1, 512).map(lambda k: 16 * k),
    min_size=1,
    max_size=8,
)


@given(widths_maps)
def test_auto_group_size_is_the_largest_of_128_64_32_that_divides_every_width(
    widths: dict[str, int],
) -> None:
    chosen = auto_group_size(widths.values())
    fitting = [g for g in AUTO_GROUP_SIZES if all(w % g == 0 for w in widths.values())]
    assert chosen == (max(fitting) if fitting else PER_CHANNEL)
    resolved = resolve_group_size(QuantizationSpec(GPTQ), widths)
    assert resolved.group_size == chosen
    check_group_size(resolved, widths)  # what auto chose always passes the explicit check


@given(widths_maps, st.sampled_from([32, 64, 128, 256]))
def test_an_explicit_group_size_is_kept_or_refused_naming_a_layer_it_does_not_divide(
    widths: dict[str, int], size: int
) -> None:
    spec = QuantizationSpec(GPTQ, group_size=size)
    misfits = [name for name, width in widths.items() if width % size]
    if not misfits:
        assert resolve_group_size(spec, widths) == spec
        return
    with pytest.raises(ConfigError) as info:
        resolve_group_size(spec, widths)
    assert f"group size {size} does not divide the input width {widths[misfits[0]]}" in str(
        info.value
    )
    assert f"'{misfits[0]}'" in str(info.value)


def test_auto_is_the_default_and_picks_64_for_smollm2() -> None:
    spec = QuantizationSpec(GPTQ)
    assert spec.group_size == "auto"
    assert resolve_group_size(spec, SMOLLM2).group_size == 64
    assert resolve_group_size(spec, {"a": 1536, "b": 4096}).group_size == 128
    assert resolve_group_size(spec, {"a": 96}).group_size == 32
    assert resolve_group_size(spec, {"a": 16 * 7}).group_size == PER_CHANNEL


class FakeQuantizer:
    engine = "fake-engine 1.0"

    def __init__(self, missing: bool = False) -> None:
        self.missing = missing
        self.calls: list[tuple[str, QuantizationSpec, int]] = []
        self.samples: list[tuple[int, ...]] = []

    def check(self, method: QuantizationMethod) -> None:
        if self.missing:
            raise BackendUnavailableError("fake engine missing: pip install fake")

    def quantize(
        self, model_dir: str, spec: QuantizationSpec, calibration: Sequence[Sequence[int]],
        output_dir: str,
    ) -> list[str]:  # fmt: skip
        self.calls.append((model_dir, spec, len(calibration)))
        self.samples = [tuple(sample) for sample in calibration]
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


#: A calibration file whose rows encode differently from the bundled sample's (FakeEncoder ids
#: are word lengths), in an order the test can check.
CALIBRATION_ROWS = [messages_row("x " * (i + 1), "yyyyy " * (i + 1)) for i in range(6)]


def use_case(
    tmp_path: Path, quantizer: FakeQuantizer, widths: dict[str, int] | None = None,
    architecture: str = "LlamaForCausalLM",
) -> QuantizeModel:  # fmt: skip
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.safetensors").write_bytes(b"w" * 1000)
    rows = [messages_row(f"question {i}", f"answer {i} " * 50) for i in range(10)]
    datasets = {"sample": rows, "calibration.jsonl": CALIBRATION_ROWS}
    return QuantizeModel(
        resolver=FakeModelResolver({"m": str(model_dir)}),
        quantizers={GPTQ: lambda: quantizer, QuantizationMethod.AWQ: lambda: quantizer},
        inspector=FakeInspector(widths or SMOLLM2, architecture),
        evaluator=FakePerplexity(),
        prepare=PrepareDataset(InMemoryRowSource(datasets)),
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


def test_the_default_group_size_is_resolved_before_quantizing_and_said_in_the_report(
    tmp_path: Path,
) -> None:
    quantizer = FakeQuantizer()
    out = tmp_path / "quant"
    report = use_case(tmp_path, quantizer).execute("m", QuantizationSpec(GPTQ), str(out))
    assert quantizer.calls[0][1].group_size == 64
    assert (report.group_size, report.group_size_auto) == (64, True)
    saved = json.loads((out / "quantization_report.json").read_text())
    assert (saved["group_size"], saved["group_size_auto"]) == (64, True)
    assert (
        "- group size: 64 (auto: the largest of 128, 64, 32 that divides every quantized "
        "layer's input width)" in (out / "quantization_report.md").read_text()
    )
    explicit = use_case(tmp_path, FakeQuantizer()).execute(
        "m", QuantizationSpec(GPTQ, group_size=32), str(tmp_path / "q32")
    )
    assert (explicit.group_size, explicit.group_size_auto) == (32, False)
    assert "- group size: 32\n" in (tmp_path / "q32" / "quantization_report.md").read_text()


def test_calibration_samples_come_from_the_given_file_in_order(tmp_path: Path) -> None:
    quantizer = FakeQuantizer()
    spec = QuantizationSpec(GPTQ, num_samples=4, max_seq_length=64)
    report = use_case(tmp_path, quantizer).execute(
        "m", spec, str(tmp_path / "q"), calibration="calibration.jsonl"
    )
    # FakeEncoder: one id per word (10 + its length), 2 after each turn.
    expected = [(*[11] * n, 2, *[15] * n, 2) for n in range(1, 5)]
    assert quantizer.samples == expected
    assert (report.calibration, report.calibration_samples) == ("calibration.jsonl", 4)
