"""Benchmark: the same SFT-LoRA steps through LargeForge and through a bare TRL script.

Both train SmolLM2-135M-Instruct with LoRA (r=16, all-linear), batch 4, fp32, max_length 256,
batches grouped by length, on the bundled sample, for the same number of optimizer steps. Only
the training loop is timed (`trainer.train()`), not model loading or data preparation.

    .venv/bin/python benchmarks/train_overhead.py [--steps 8]

Prints the best seconds per step of interleaved repeats for each, and the ratio
LargeForge / bare TRL (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any


def bare_trl(model_dir: str, rows: list[dict[str, Any]], steps: int, out: str) -> float:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=256,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length",
        seed=0,
    )
    peft = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft,
    )
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps


def largeforge(model_dir: str, steps: int, out: str) -> float:
    from largeforge.adapters.data.sources import FileRowSource
    from largeforge.adapters.hf.chat_template import HfEncoderFactory
    from largeforge.adapters.trl import common
    from largeforge.adapters.trl.sft import TrlSftTrainer
    from largeforge.application.data import PrepareDataset
    from largeforge.domain.formats import DatasetSpec
    from largeforge.domain.training import LoraSpec, TrainingPlan

    encoder = HfEncoderFactory().for_model(model_dir)
    prepared = PrepareDataset(FileRowSource()).execute(
        DatasetSpec("sample"), encoder=encoder, max_length=256
    )
    encoded = [e for e in prepared.encoded if e is not None]
    timings: list[float] = []
    original = common.run_training

    def timed(trainer: Any, resume: bool) -> Any:
        start = time.perf_counter()
        try:
            return original(trainer, resume)
        finally:
            timings.append(time.perf_counter() - start)

    common.run_training = timed
    plan = TrainingPlan(
        model="bench",
        datasets=(DatasetSpec("sample"),),
        lora=LoraSpec(rank=16, alpha=32),
        max_steps=steps,
        batch_size=4,
        learning_rate=2e-4,
        warmup_steps=1,
        logging_steps=1,
        max_length=256,
        save_steps=0,
        seed=0,
    )
    TrlSftTrainer(device="cpu").train(plan, model_dir, encoded, [], out, lambda m: None)
    common.run_training = original
    return timings[0] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs; best is kept")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    os.environ.setdefault("LARGEFORGE_LOG_LEVEL", "WARNING")

    from largeforge.adapters.data.sources import sample_dataset_path
    from largeforge.adapters.models.resolver import HfModelResolver
    from largeforge.entrypoints.logs import configure_logging

    configure_logging()
    model_dir = HfModelResolver().resolve(args.model)
    import json

    rows = []
    for line in sample_dataset_path().read_text().splitlines():
        messages = json.loads(line)["messages"]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    bares, ourses = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # interleaved, so drift and warm-up hit both sides
            bares.append(bare_trl(model_dir, rows, args.steps, f"{tmp}/bare{i}"))
            ourses.append(largeforge(model_dir, args.steps, f"{tmp}/ours{i}"))
    bare, ours = min(bares), min(ourses)
    print(f"steps: {args.steps} (batch 4, LoRA r16 all-linear, fp32)")
    print(f"bare TRL:   {bare:.2f} s/step")
    print(f"largeforge: {ours:.2f} s/step")
    print(f"ratio (largeforge / bare TRL): {ours / bare:.2f}x  (goal <= 1.05x)")


if __name__ == "__main__":
    main()
