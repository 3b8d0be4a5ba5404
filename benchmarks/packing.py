"""Benchmark: SFT tokens/s with sample packing against without, on short Alpaca-style rows.

Both sides train the same LoRA (r=16, all-linear) on SmolLM2-135M-Instruct through LargeForge's
TRL adapter, batch 8, max_length 256. Without packing, each row is its own (padded) sequence;
with packing, rows are packed best-fit into 256-token sequences whose position ids restart per
row (padding-free, no cross-attention). Packed runs use LargeForge's length-grouped attention; a
third run packs with transformers' stock sdpa (one block-diagonal mask over the whole batch) to
show what that attention saves. Throughput counts real tokens only (TRL's counter).

    .venv/bin/python benchmarks/packing.py [--steps 5] [--rows 2000]

Prints the median tokens/s of each and the ratios packed / unpacked (goal: never below 1x on any
device; 2x where padding dominates) and length-grouped / block-diagonal attention, then one
JSON line of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from unittest import mock


def run(
    model_dir: str, encoded: list, steps: int, packing: bool, out: str, stock_sdpa: bool = False
) -> float:
    from largeforge.adapters.hf import packed_attention
    from largeforge.adapters.trl.sft import TrlSftTrainer
    from largeforge.domain.formats import DatasetSpec
    from largeforge.domain.training import LoraSpec, StepMetrics, TrainingPlan

    plan = TrainingPlan(
        model="bench",
        datasets=(DatasetSpec("mem"),),
        lora=LoraSpec(rank=16, alpha=32),
        max_steps=steps,
        batch_size=8,
        learning_rate=2e-4,
        warmup_steps=0,
        logging_steps=1,
        max_length=256,
        packing=packing,
        save_steps=0,
        seed=0,
    )
    metrics: list[StepMetrics] = []
    attention = "sdpa" if stock_sdpa else packed_attention.register()
    with mock.patch.object(packed_attention, "register", return_value=attention):
        TrlSftTrainer(device="cpu").train(plan, model_dir, encoded, [], out, metrics.append)
    speeds = [m.tokens_per_second for m in metrics if m.tokens_per_second and m.step > 1]
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    os.environ.setdefault("LARGEFORGE_LOG_LEVEL", "WARNING")

    from largeforge.adapters.hf.chat_template import HfEncoderFactory
    from largeforge.adapters.models.resolver import HfModelResolver
    from largeforge.domain import Conversation, Message, Role, SftExample
    from largeforge.entrypoints.logs import configure_logging

    configure_logging()
    model_dir = HfModelResolver().resolve(args.model)
    encoder = HfEncoderFactory().for_model(model_dir)
    topics = ["lists", "dicts", "sets", "loops", "files", "classes", "strings", "numbers"]
    examples = [
        SftExample(
            Conversation(
                (
                    Message(Role.SYSTEM, "Be brief."),
                    Message(Role.USER, f"Name one fact about Python {topics[i % 8]} ({i})."),
                    Message(Role.ASSISTANT, f"Python {topics[i % 8]} are built in. " * (1 + i % 3)),
                )
            )
        )
        for i in range(args.rows)
    ]
    encoded = encoder.encode_many(examples)
    lengths = sorted(e.length for e in encoded)
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = run(model_dir, encoded, args.steps, False, f"{tmp}/unpacked")
        packed = run(model_dir, encoded, args.steps, True, f"{tmp}/packed")
        stock = run(model_dir, encoded, args.steps, True, f"{tmp}/stock", stock_sdpa=True)
    print(
        f"rows: {args.rows}, tokens per row: median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}; batch 8, max_length 256, {args.steps} steps"
    )
    print(f"without packing: {unpacked:,.0f} tokens/s")
    print(f"with packing:    {packed:,.0f} tokens/s")
    print(f"with packing, stock block-diagonal sdpa: {stock:,.0f} tokens/s")
    print(f"ratio (packed / unpacked): {packed / unpacked:.2f}x  (goal: never below 1x)")
    print(f"ratio (length-grouped / block-diagonal attention): {packed / stock:.2f}x")
    ratios = {
        "packed_vs_unpacked": round(packed / unpacked, 3),
        "grouped_vs_block_diagonal": round(packed / stock, 3),
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
