"""Benchmark: LargeForge's data pipeline against a bare `datasets` + chat template baseline.

Both sides read the same generated Alpaca JSON Lines file, render every row with the model's chat
template and tokenize it. LargeForge additionally validates every row (types, roles, turn order,
empty turns, duplicates), cleans text, and computes turn-by-turn assistant loss masks.

    .venv/bin/python benchmarks/data_pipeline.py [--rows 50000] [--model smollm2-135m-instruct]

Prints rows/s for each side and the ratio of LargeForge's time to the baseline's (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def make_alpaca(path: Path, rows: int) -> None:
    topics = ["lists", "dicts", "sets", "tuples", "strings", "files", "classes", "generators"]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            topic = topics[i % len(topics)]
            row = {
                "instruction": f"Explain how Python {topic} work, example {i}.",
                "input": "" if i % 3 else f"Use a short example about {topic}.",
                "output": f"Python {topic} are built-in. Example {i}: they store values and "
                f"support iteration, membership tests and len(). " * (1 + i % 3),
            }
            handle.write(json.dumps(row) + "\n")


def baseline(path: Path, tokenizer: object) -> int:
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train")

    def render(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        texts = []
        for instruction, extra, output in zip(
            batch["instruction"], batch["input"], batch["output"], strict=True
        ):
            prompt = f"{instruction}\n\n{extra}" if extra else instruction
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": output},
            ]
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))  # type: ignore[attr-defined]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return {"input_ids": ids}

    out = dataset.map(render, batched=True, remove_columns=dataset.column_names)
    return len(out)


def largeforge(path: Path, model_dir: str) -> int:
    from largeforge.adapters.data.sources import FileRowSource
    from largeforge.adapters.hf.chat_template import HfEncoderFactory
    from largeforge.application.data import PrepareDataset
    from largeforge.domain.formats import DatasetSpec

    encoder = HfEncoderFactory().for_model(model_dir)
    prepared = PrepareDataset(FileRowSource()).execute(
        DatasetSpec(str(path)), encoder=encoder, max_length=4096
    )
    assert prepared.report.issues == (), prepared.report.by_kind()
    return len(prepared.records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    import os

    os.environ.setdefault("LARGEFORGE_LOG_LEVEL", "WARNING")
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer

    from largeforge.adapters.models.resolver import HfModelResolver
    from largeforge.entrypoints.logs import configure_logging

    configure_logging()
    disable_progress_bar()
    model_dir = HfModelResolver().resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alpaca.jsonl"
        make_alpaca(path, args.rows)
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "cache")  # no cache hits
        start = time.perf_counter()
        n_base = baseline(path, tokenizer)
        base_s = time.perf_counter() - start
        start = time.perf_counter()
        n_ours = largeforge(path, model_dir)
        ours_s = time.perf_counter() - start
    assert n_base == n_ours == args.rows, (n_base, n_ours)
    print(f"rows: {args.rows}")
    print(
        f"baseline (datasets map + apply_chat_template + tokenize): {base_s:.2f} s, "
        f"{args.rows / base_s:,.0f} rows/s"
    )
    print(
        f"largeforge (validate + clean + dedupe + template + masks + tokenize): {ours_s:.2f} s, "
        f"{args.rows / ours_s:,.0f} rows/s"
    )
    print(f"ratio (largeforge / baseline time): {ours_s / base_s:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
