"""The `QuantizeModel` use case: check, calibrate, quantize, then measure size and perplexity."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from largeforge.application.data import PrepareDataset
from largeforge.application.ports import (
    EncoderFactory,
    ModelInspector,
    ModelResolver,
    PerplexityEvaluator,
    Quantizer,
)
from largeforge.domain.errors import ConfigError, DatasetError
from largeforge.domain.formats import DatasetSpec
from largeforge.domain.quantization import (
    QuantizationMethod,
    QuantizationReport,
    QuantizationSpec,
    describe_group_size,
    group_size_columns,
    resolve_group_size,
)
from largeforge.domain.validation import TooLong, ValidationPolicy

log = structlog.get_logger(__name__)

#: Architectures whose quantized checkpoints llm-compressor, transformers and vLLM all handle.
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Phi3ForCausalLM",
    }
)


@dataclass(frozen=True)
class CheckedQuantization:
    """What the pre-checks settled: the engine, the resolved model and the spec with a numeric
    group size (`auto` resolved against the model's layers)."""

    quantizer: Quantizer
    model_dir: str
    spec: QuantizationSpec
    group_size_auto: bool

    @property
    def group_size_text(self) -> str:
        return describe_group_size(group_size_columns(self.spec), self.group_size_auto)


class QuantizeModel:
    """Quantize a model with AWQ or GPTQ and report size and perplexity before and after.

    Everything that can fail cheaply fails before the model is loaded: the method and its
    engine, the architecture, the group size against every layer's width, the output directory,
    and the calibration data.
    """

    def __init__(
        self,
        resolver: ModelResolver,
        quantizers: Mapping[QuantizationMethod, Callable[[], Quantizer]],
        inspector: ModelInspector,
        evaluator: PerplexityEvaluator,
        prepare: PrepareDataset,
        encoders: EncoderFactory,
        held_out: Callable[[], Sequence[str]],
    ) -> None:
        self._resolver = resolver
        self._quantizers = quantizers
        self._inspector = inspector
        self._evaluator = evaluator
        self._prepare = prepare
        self._encoders = encoders
        self._held_out = held_out

    def check(self, model_ref: str, spec: QuantizationSpec, output_dir: str) -> CheckedQuantization:
        """All pre-checks, before any weights are loaded; `auto` group size is resolved here."""
        factory = self._quantizers.get(spec.method)
        if factory is None:
            valid = ", ".join(m.value for m in self._quantizers)
            raise ConfigError(f"unknown quantization method '{spec.method}'; valid: {valid}")
        quantizer = factory()
        quantizer.check(spec.method)
        out = Path(output_dir)
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"output directory {output_dir} is not empty; choose another -o")
        model_dir = self._resolver.resolve(model_ref)
        architecture = self._inspector.architecture(model_dir)
        if architecture not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
            raise ConfigError(
                f"architecture {architecture} is not supported for quantization; "
                f"supported: {supported}"
            )
        widths = self._inspector.linear_widths(model_dir, spec.ignore)
        resolved = resolve_group_size(spec, widths)
        return CheckedQuantization(quantizer, model_dir, resolved, spec.group_size == "auto")

    def execute(
        self,
        model_ref: str,
        spec: QuantizationSpec,
        output_dir: str,
        calibration: str = "sample",
        eval_max_length: int = 512,
    ) -> QuantizationReport:
        checked = self.check(model_ref, spec, output_dir)
        quantizer, model_dir, spec = checked.quantizer, checked.model_dir, checked.spec
        samples = self.calibration_samples(model_dir, calibration, spec)
        texts = list(self._held_out())
        log.info("quantization_started", method=spec.method.value, engine=quantizer.engine,
                 samples=len(samples), group_size=checked.group_size_text)  # fmt: skip
        ppl_before, tokens = self._evaluator.perplexity(model_dir, texts, eval_max_length)
        started = time.monotonic()
        notes = quantizer.quantize(model_dir, spec, samples, output_dir)
        seconds = time.monotonic() - started
        ppl_after, _ = self._evaluator.perplexity(output_dir, texts, eval_max_length)
        report = QuantizationReport(
            method=spec.method,
            engine=quantizer.engine,
            scheme=spec.scheme,
            group_size=group_size_columns(spec),
            output_dir=output_dir,
            bytes_before=self._inspector.weights_bytes(model_dir),
            bytes_after=self._inspector.weights_bytes(output_dir),
            perplexity_before=ppl_before,
            perplexity_after=ppl_after,
            seconds=seconds,
            calibration=calibration,
            calibration_samples=len(samples),
            eval_tokens=tokens,
            notes=tuple(notes),
            group_size_auto=checked.group_size_auto,
        )
        out = Path(output_dir)
        (out / "quantization_report.md").write_text(report.to_markdown(), encoding="utf-8")
        data = asdict(report) | {"size_ratio": report.size_ratio,
                                 "perplexity_ratio": report.perplexity_ratio,
                                 "source_model": model_dir}  # fmt: skip
        (out / "quantization_report.json").write_text(
            json.dumps(data, indent=2, default=str), encoding="utf-8"
        )
        log.info("quantization_finished", seconds=round(seconds, 1),
                 perplexity_ratio=round(report.perplexity_ratio, 4),
                 size_ratio=round(report.size_ratio, 4))  # fmt: skip
        return report

    def calibration_samples(
        self, model_dir: str, source: str, spec: QuantizationSpec
    ) -> list[tuple[int, ...]]:
        """Up to `spec.num_samples` rows of `source`, rendered with the chat template and
        tokenized, each cut to `spec.max_seq_length` tokens."""
        encoder = self._encoders.for_model(model_dir, "all")
        policy = ValidationPolicy(too_long=TooLong.TRUNCATE)
        prepared = self._prepare.execute(
            DatasetSpec(source=source), policy, encoder, spec.max_seq_length
        )
        # Rows are truncated to max_seq_length by the policy above; skipped rows are None.
        samples = [e.input_ids for e in prepared.encoded if e is not None][: spec.num_samples]
        if not samples:
            raise DatasetError(f"calibration data {source} has no usable rows")
        return samples
