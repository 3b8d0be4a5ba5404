"""Merge a PEFT LoRA adapter into its base model, verify the logits, save a standalone model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import structlog

from largeforge.domain.errors import TrainingError

log = structlog.get_logger(__name__)

_PROBE_TEXTS = (
    "Hello! How are you today?",
    "def fibonacci(n):",
    "The capital of France is",
)


class PeftLoraMerger:
    """`ModelMerger` over PEFT's `merge_and_unload`.

    Before saving it compares the merged model's logits with base + adapter on a few probe
    inputs and fails when the largest difference exceeds `tolerance`.
    """

    def __init__(self, tolerance: float = 1e-3) -> None:
        self._tolerance = tolerance
        self.last_max_abs_diff: float | None = None

    def merge(self, base_dir: str, adapter_dir: str, output_dir: str) -> str:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        peft_model = PeftModel.from_pretrained(base, adapter_dir)
        peft_model.eval()
        probe = tokenizer(list(_PROBE_TEXTS), return_tensors="pt", padding=True)
        with torch.no_grad():
            expected = peft_model(**probe).logits
            merged = peft_model.merge_and_unload()
            actual = merged(**probe).logits
        mask = probe["attention_mask"].bool()
        diff = float((expected - actual).abs()[mask].max())
        self.last_max_abs_diff = diff
        log.info("merge_verified", max_abs_logit_diff=diff, tolerance=self._tolerance)
        if diff > self._tolerance:
            raise TrainingError(
                f"merged model differs from base + adapter: max |logit diff| {diff:.2e} "
                f"> tolerance {self._tolerance:.0e}"
            )
        out = Path(output_dir)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _copy_generation_config(base, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return str(out)


def _copy_generation_config(base: Any, target: Path) -> None:
    """Keep the base model's EOS/pad so the served model stops where the base did."""
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(str(target))
