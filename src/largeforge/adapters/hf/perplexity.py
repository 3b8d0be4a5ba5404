"""`PerplexityEvaluator` with transformers: token-level perplexity over non-overlapping windows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)


class TransformersPerplexityEvaluator:
    """Loads the model directory (plain or compressed-tensors quantized) on the CPU or `device`
    and scores the joined texts in windows of `max_length` tokens."""

    def __init__(self, device: str = "cpu") -> None:
        self._device = device

    def perplexity(
        self, model_dir: str, texts: Sequence[str], max_length: int
    ) -> tuple[float, int]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.to(self._device).eval()
        ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids[0]
        total_nll, total_tokens = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(ids) - 1, max_length):
                window = ids[start : start + max_length].unsqueeze(0).to(self._device)
                if window.shape[1] < 2:
                    break
                logits = model(window).logits[0, :-1].float()
                targets = window[0, 1:]
                nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
                total_nll += float(nll)
                total_tokens += int(targets.numel())
        del model
        ppl = math.exp(total_nll / total_tokens)
        log.info("perplexity", model=model_dir, perplexity=round(ppl, 4), tokens=total_tokens)
        return ppl, total_tokens
