"""Benchmark: GRPO's generation on a CPU, TRL's built-in path against LargeForge's engine.

Each GRPO step samples `num_generations` answers to each of its prompts with the policy as it
is now (the base model plus the LoRA adapter being trained). The two ways to do that here:

- TRL's: `model.generate` on the PEFT model, the adapter unmerged, as `GRPOTrainer` does
  without vLLM (bf16 frozen base, fp32 LoRA weights, as LargeForge's training stack loads it);
- LargeForge's batching engine (prepacked bf16 kernels, continuous batching): it serves a model
  directory, so the policy must reach it first. Without an in-place weight update, that is the
  adapter merged into the base and the engine loaded again, every step.

Both sample the same step: 2 prompts x 4 answers of exactly `--tokens` tokens (EOS ignored),
temperature 1, from SmolLM2-135M-Instruct with a rank-16 all-linear adapter whose weights are
random (so merging it matters). Medians of `--repeats` rounds.

    .venv/bin/python benchmarks/grpo_generation.py [--tokens 32] [--repeats 3]

Prints each side and the ratios, then ONE JSON line: engine_generation_vs_trl (TRL's seconds
over the engine's, generation alone) and engine_with_sync_vs_trl (the same with the merge and
the reload a step needs). GRPO uses the faster path in practice: TRL's while the second ratio
is below 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = (
    "What is 7 + 5? Reply with only the number.",
    "What is 12 - 4? Reply with only the number.",
)
GENERATIONS = 4


def policy(model_dir: str) -> tuple[Any, Any]:
    """The base model in bf16 with a random rank-16 LoRA adapter (fp32), as training holds it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, config, autocast_adapter_dtype=True)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.01)
    return model.eval(), tokenizer


def trl_generation(model: Any, tokenizer: Any, tokens: int) -> float:
    """Seconds for one step's answers through `generate` on the PEFT model."""
    import torch

    chats = [[{"role": "user", "content": p}] for p in PROMPTS for _ in range(GENERATIONS)]
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] - batch["input_ids"].shape[1] == tokens
    return elapsed


def sync(model: Any, tokenizer: Any, out: Path) -> float:
    """Seconds to merge the adapter into a copy of the base and write it for the engine."""
    import copy

    start = time.perf_counter()
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return time.perf_counter() - start


def engine_generation(model_dir: Path, tokens: int) -> tuple[float, float]:
    """(seconds to load the engine on `model_dir`, seconds for one step's answers)."""
    from largeforge.adapters.hf.inference import TransformersInferenceEngine
    from largeforge.domain import Message, Role, SamplingParams

    start = time.perf_counter()
    engine = TransformersInferenceEngine(str(model_dir), "policy", max_num_seqs=16)
    load = time.perf_counter() - start
    params = SamplingParams(max_tokens=tokens, temperature=1.0, ignore_eos=True)

    async def one(prompt: str) -> int:
        count = 0
        async for _ in engine.generate(engine.render_chat((Message(Role.USER, prompt),)), params):
            count += 1
        return count

    async def step() -> list[int]:
        return await asyncio.gather(*(one(p) for p in PROMPTS for _ in range(GENERATIONS)))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(step())  # warm-up: the kernels' first call
        start = time.perf_counter()
        counts = loop.run_until_complete(step())
        elapsed = time.perf_counter() - start
    finally:
        loop.close()
        engine.close()
    assert all(c >= 1 for c in counts)
    return load, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from largeforge.adapters.models.resolver import HfModelResolver

    model_dir = HfModelResolver().resolve(args.model)
    model, tokenizer = policy(model_dir)
    trl_generation(model, tokenizer, 2)  # warm-up
    trl = statistics.median(
        trl_generation(model, tokenizer, args.tokens) for _ in range(args.repeats)
    )
    syncs, loads, engine = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            out = Path(tmp) / f"policy-{round_}"
            syncs.append(sync(model, tokenizer, out))
            load, elapsed = engine_generation(out, args.tokens)
            loads.append(load)
            engine.append(elapsed)
    sync_s, load_s, engine_s = (statistics.median(x) for x in (syncs, loads, engine))
    answers = len(PROMPTS) * GENERATIONS
    print(f"one GRPO step's answers: {answers} x {args.tokens} tokens")
    print(f"TRL generate on the PEFT model:   {trl:.2f} s")
    print(f"LargeForge engine, generation:    {engine_s:.2f} s")
    print(f"  + merge and write the policy:   {sync_s:.2f} s")
    print(f"  + load the engine on it:        {load_s:.2f} s")
    with_sync = engine_s + sync_s + load_s
    print(f"engine generation vs TRL: {trl / engine_s:.2f}x; with the sync: {trl / with_sync:.2f}x")
    print(
        json.dumps(
            {
                "engine_generation_vs_trl": round(trl / engine_s, 3),
                "engine_with_sync_vs_trl": round(trl / with_sync, 3),
                "trl_seconds": round(trl, 3),
                "engine_seconds": round(engine_s, 3),
                "sync_seconds": round(sync_s + load_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
