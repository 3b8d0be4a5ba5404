"""`Quantizer` with llm-compressor: GPTQ, or AWQ smoothing followed by round-to-nearest, both
weight-only (W4A16 / W8A16) with groups, saved as compressed-tensors (transformers and vLLM load
it). The `quant` extra installs it: `pip install 'largeforge[quant]'`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from largeforge.domain.errors import BackendUnavailableError
from largeforge.domain.quantization import (
    PER_CHANNEL,
    QuantizationMethod,
    QuantizationSpec,
    group_size_columns,
)

log = structlog.get_logger(__name__)

INSTALL_HINT = "pip install 'largeforge[quant]'  (llm-compressor and compressed-tensors)"
#: Files besides the weights that the served model needs: template, EOS, sampling defaults.
CARRIED_FILES = ("generation_config.json", "chat_template.jinja", "chat_template.json")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class LlmCompressorQuantizer:
    """AWQ and GPTQ through llm-compressor's `oneshot`, on whatever device the model is on
    (CPU here). Calibration samples are token ids rendered with the chat template."""

    def __init__(self, device: str = "cpu") -> None:
        self._device = device
        self.engine = f"llm-compressor {_version('llmcompressor')}"

    def check(self, method: QuantizationMethod) -> None:
        if importlib.util.find_spec("llmcompressor") is None:
            raise BackendUnavailableError(
                f"{method.value.upper()} needs llm-compressor, which is not installed: "
                f"{INSTALL_HINT}"
            )
        if importlib.util.find_spec("compressed_tensors") is None:
            raise BackendUnavailableError(f"compressed-tensors is not installed: {INSTALL_HINT}")

    def quantize(
        self,
        model_dir: str,
        spec: QuantizationSpec,
        calibration: Sequence[Sequence[int]],
        output_dir: str,
    ) -> list[str]:
        import torch
        from datasets import Dataset
        from llmcompressor.entrypoints.oneshot import oneshot
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _allow_awq_without_accelerator()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.to(self._device)
        rows = [list(ids) for ids in calibration]
        dataset = Dataset.from_dict(
            {"input_ids": rows, "attention_mask": [[1] * len(ids) for ids in rows]}
        )
        oneshot(
            model=model,
            tokenizer=tokenizer,
            dataset=dataset,
            recipe=self.recipe(spec),
            max_seq_length=spec.max_seq_length,
            num_calibration_samples=len(rows),
            shuffle_calibration_samples=False,
        )
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, save_compressed=True)
        tokenizer.save_pretrained(out)
        for name in CARRIED_FILES:
            source = Path(model_dir) / name
            if source.is_file() and not (out / name).exists():
                shutil.copy2(source, out / name)
        log.info("quantized_model_saved", output=str(out), scheme=spec.scheme)
        return [
            f"{spec.method.value.upper()} via llm-compressor oneshot; "
            f"compressed-tensors {_version('compressed-tensors')} checkpoint",
        ]

    @staticmethod
    def recipe(spec: QuantizationSpec) -> list[Any]:
        """The llm-compressor modifiers for a spec (its group size resolved, not `auto`)."""
        from llmcompressor.modifiers.gptq import GPTQModifier
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        size = group_size_columns(spec)
        group = size != PER_CHANNEL
        weights = {
            "num_bits": spec.bits,
            "type": "int",
            "symmetric": spec.symmetric,
            "strategy": "group" if group else "channel",
            **({"group_size": size} if group else {}),
        }
        groups = {"group_0": {"targets": ["Linear"], "weights": weights}}
        ignore = list(spec.ignore)
        if spec.method is QuantizationMethod.GPTQ:
            return [GPTQModifier(config_groups=groups, ignore=ignore)]
        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=ignore)]


def _allow_awq_without_accelerator() -> None:
    """llm-compressor's AWQ pins cached activations for faster host-to-device copies, which
    fails when there is no accelerator: there is nothing to copy to, so skip pinning."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        return
    if getattr(IntermediatesCache.pin_memory, "_largeforge_noop", False):
        return

    def pin_memory(self: Any, batch_index: int, input_names: Any = None) -> None:
        return None

    pin_memory._largeforge_noop = True  # type: ignore[attr-defined]
    setattr(IntermediatesCache, "pin_memory", pin_memory)  # noqa: B010 (a patch, not an attribute)
