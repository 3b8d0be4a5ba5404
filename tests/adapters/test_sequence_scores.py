"""The held-out scorer on the tiny model: each example's NLL over its trained tokens equals a
plain forward pass of that example alone, whatever else shares its batch (padding is never
scored), and top-1 predictions are the argmax at exactly those positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from largeforge.adapters.hf.sequence_scores import TransformersSequenceScorer
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.evaluation import ModelVariant, VariantKind


def alone(model: torch.nn.Module, example: EncodedExample) -> tuple[float, int, list[int]]:
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    keep = torch.tensor(example.trainable[1:])
    nll = torch.nn.functional.cross_entropy(logits[keep], ids[0, 1:][keep], reduction="sum")
    return float(nll), int(keep.sum()), logits[keep].argmax(-1).tolist()


def test_batched_scores_equal_each_example_alone(tiny_model_dir: Path) -> None:
    examples = [
        EncodedExample(tuple(range(5, 45)), (False,) * 20 + (True,) * 20),
        EncodedExample((7, 8, 9, 10, 11), (False, False, True, True, False)),
        EncodedExample(tuple(range(60, 70)), (False,) * 3 + (True,) * 7),
    ]
    variant = ModelVariant("tiny", VariantKind.MODEL, str(tiny_model_dir))
    scored = TransformersSequenceScorer(batch_size=3).score(variant, examples, top1=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for example, score in zip(examples, scored, strict=True):
        nll, tokens, top1 = alone(model, example)
        assert score.nll == pytest.approx(nll, rel=1e-4)
        assert score.tokens == tokens == sum(example.trainable[1:])
        assert list(score.top1) == top1
    assert scored[1].tokens == 2  # the untrained last token carries no loss
