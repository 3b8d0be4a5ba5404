"""Benchmark: the same SFT-LoRA steps through LargeForge and through a bare TRL fp32 script.

Both train SmolLM2-135M-Instruct with LoRA (r=16, all-linear), batch 4, max_length 256, batches
grouped by length, on the bundled sample less its last `--eval-rows` rows, for the same number of
optimizer steps. The bare script trains in fp32; LargeForge in its `training.precision` (auto: a
bf16 frozen base with fp32 LoRA weights on a CPU with bf16 instructions). Only the training loop
is timed (`trainer.train()`), not model loading, data preparation or evaluation.

Each side's final eval loss is its trainer's own evaluation of the held-out rows (the last
`--eval-rows` rows of the sample, prompt/completion with the loss on the last assistant turn on
the bare side, LargeForge's assistant masks on its side).

    .venv/bin/python benchmarks/train_overhead.py [--steps 8] [--precision auto]

Prints both sides and the ratios, then ONE JSON line: speedup_vs_bare_trl (bare seconds/step over
LargeForge's; goal >= 1.5), eval_loss_ratio (LargeForge / bare; goal within 2 %), the dtypes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any


def heldout_loss(model: Any, rows: list[Any]) -> float:
    """Token-weighted mean NLL of `model` over encoded rows (their own assistant masks), in the
    model's own dtypes: the same function scores both sides."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([list(row.input_ids)])
            labels = torch.tensor([row.labels()])
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[0, 1:]
            keep = target != -100
            nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total, count = total + float(nll), count + int(keep.sum())
    return total / count


def bare_trl(
    model_dir: str, rows: list[dict[str, Any]], held_out: list[Any], steps: int, out: str
) -> tuple[float, float]:
    """(seconds per step, held-out loss) of the bare TRL script, in fp32."""
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
    seconds = (time.perf_counter() - start) / steps
    return seconds, heldout_loss(trainer.model, held_out)


def largeforge(
    model_dir: str, train: list[Any], held_out: list[Any], steps: int, precision: str, out: str
) -> tuple[float, float, str]:
    """(seconds per step, held-out loss, base weights dtype) through `TrlSftTrainer`; the
    held-out loss of the saved adapter on the base loaded as training loaded it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from largeforge.adapters.trl import recipe
    from largeforge.adapters.trl.sft import TrlSftTrainer
    from largeforge.domain.formats import DatasetSpec
    from largeforge.domain.training import LoraSpec, TrainingPlan

    timings: list[float] = []
    dtypes: list[Any] = []
    original = getattr(recipe, "train_from_checkpoint")  # noqa: B009 (not re-exported)

    def timed(trainer: Any, resume: bool) -> Any:
        base = trainer.model.get_base_model()
        dtypes.append(next(base.parameters()).dtype)
        start = time.perf_counter()
        try:
            return original(trainer, resume)
        finally:
            timings.append(time.perf_counter() - start)

    setattr(recipe, "train_from_checkpoint", timed)  # noqa: B010
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
        precision=precision,
    )
    try:
        result = TrlSftTrainer(device="cpu").train(plan, model_dir, train, [], out, lambda m: None)
    finally:
        setattr(recipe, "train_from_checkpoint", original)  # noqa: B010
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtypes[0])
    model = PeftModel.from_pretrained(base, result.adapter_dir)
    return timings[0] / steps, heldout_loss(model, held_out), str(dtypes[0]).removeprefix("torch.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs; best is kept")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--eval-rows", type=int, default=24, help="held-out rows")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    os.environ.setdefault("LARGEFORGE_LOG_LEVEL", "WARNING")

    from largeforge.adapters.data.sources import sample_dataset_path
    from largeforge.adapters.models.resolver import HfModelResolver
    from largeforge.entrypoints.logs import configure_logging

    configure_logging()
    model_dir = HfModelResolver().resolve(args.model)

    from largeforge.adapters.data.sources import FileRowSource
    from largeforge.adapters.hf.chat_template import HfEncoderFactory
    from largeforge.application.data import PrepareDataset
    from largeforge.domain.formats import DatasetSpec

    conversations = [
        json.loads(line)["messages"] for line in sample_dataset_path().read_text().splitlines()
    ]
    prepared = PrepareDataset(FileRowSource()).execute(
        DatasetSpec("sample"), encoder=HfEncoderFactory().for_model(model_dir), max_length=256
    )
    assert len(prepared.encoded) == len(conversations), "the sample is read row for row"
    # Held out: the last rows with a single assistant turn, where TRL's completion-only loss
    # and LargeForge's assistant masks train on the same tokens.
    single = [
        i for i, m in enumerate(conversations) if [x["role"] for x in m].count("assistant") == 1
    ]
    held = set(single[-args.eval_rows :])
    rows = [
        {"prompt": m[:-1], "completion": m[-1:]}
        for i, m in enumerate(conversations)
        if i not in held
    ]
    train = [e for i, e in enumerate(prepared.encoded) if e is not None and i not in held]
    held_out = [e for i, e in enumerate(prepared.encoded) if e is not None and i in held]
    bares, ourses = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):  # interleaved, so drift and warm-up hit both sides
            bares.append(bare_trl(model_dir, rows, held_out, args.steps, f"{tmp}/bare{i}"))
            ourses.append(
                largeforge(model_dir, train, held_out, args.steps, args.precision, f"{tmp}/ours{i}")
            )
    bare = min(seconds for seconds, _ in bares)
    ours = min(seconds for seconds, _, _ in ourses)
    bare_loss, ours_loss, dtype = bares[-1][1], ourses[-1][1], ourses[-1][2]
    speedup, loss_ratio = bare / ours, ours_loss / bare_loss
    print(f"steps: {args.steps} (batch 4, LoRA r16 all-linear), held-out rows: {len(held_out)}")
    print(f"bare TRL (fp32):       {bare:.2f} s/step  held-out loss {bare_loss:.4f}")
    print(f"largeforge ({dtype} base, fp32 LoRA): {ours:.2f} s/step  held-out loss {ours_loss:.4f}")
    print(f"speedup (bare TRL / largeforge s/step): {speedup:.2f}x  (goal >= 1.5x)")
    print(f"eval loss ratio (largeforge / bare TRL): {loss_ratio:.4f}  (goal within 2 %)")
    print(
        json.dumps(
            {
                "speedup_vs_bare_trl": round(speedup, 3),
                "eval_loss_ratio": round(loss_ratio, 4),
                "bare_trl_s_per_step": round(bare, 3),
                "largeforge_s_per_step": round(ours, 3),
                "bare_trl_eval_loss": round(bare_loss, 4),
                "largeforge_eval_loss": round(ours_loss, 4),
                "bare_trl_dtype": "float32",
                "largeforge_base_dtype": dtype,
                "largeforge_lora_dtype": "float32",
                "precision": args.precision,
                "steps": args.steps,
                "eval_rows": len(held_out),
            }
        )
    )


if __name__ == "__main__":
    main()
