"""`SequenceScorer` with transformers: teacher-forced NLL of each example's trained tokens."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import structlog

from largeforge.application.ports import SequenceScore
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.evaluation import ModelVariant

log = structlog.get_logger(__name__)


def load_variant(variant: ModelVariant, device: str = "cpu") -> Any:
    """The variant's model in fp32 and eval mode: a model directory (plain or compressed-tensors
    quantized, as `serve` loads it), with its PEFT adapter applied (unmerged) when it has one."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(variant.model_dir, dtype=torch.float32)
    if variant.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, variant.adapter_dir)
    return model.to(device).eval()


class TransformersSequenceScorer:
    """Scores examples in batches of similar length (right-padded; padding never scored).

    A token at position i carries loss when `trainable[i]`: it is predicted from positions
    < i, exactly as the trainer's labels are.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 8) -> None:
        self._device = device
        self._batch_size = batch_size

    def score(
        self, variant: ModelVariant, examples: Sequence[EncodedExample], *, top1: bool = False
    ) -> list[SequenceScore]:
        import torch
        from tqdm import tqdm

        model = load_variant(variant, self._device)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        results: list[SequenceScore | None] = [None] * len(examples)
        batches = [
            order[start : start + self._batch_size]
            for start in range(0, len(order), self._batch_size)
        ]
        bar = tqdm(
            batches,
            desc=f"scoring {variant.name}",
            unit="batch",
            disable=not sys.stderr.isatty(),
        )
        with torch.inference_mode():
            for batch in bar:
                width = max(len(examples[i].input_ids) for i in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                scored = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, index in enumerate(batch):
                    example = examples[index]
                    length = len(example.input_ids)
                    ids[row, :length] = torch.tensor(example.input_ids)
                    attention[row, :length] = 1
                    scored[row, :length] = torch.tensor(example.trainable)
                logits = (
                    model(input_ids=ids.to(self._device), attention_mask=attention.to(self._device))
                    .logits[:, :-1]
                    .float()
                )
                targets = ids[:, 1:].to(self._device)
                mask = scored[:, 1:].to(self._device)
                nll = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), targets, reduction="none"
                )
                predicted = logits.argmax(dim=-1)
                for row, index in enumerate(batch):
                    keep = mask[row]
                    results[index] = SequenceScore(
                        nll=float(nll[row][keep].sum()),
                        tokens=int(keep.sum()),
                        top1=tuple(int(t) for t in predicted[row][keep]) if top1 else (),
                    )
        del model
        log.info("sequences_scored", variant=variant.name, examples=len(examples))
        return [r for r in results if r is not None]
