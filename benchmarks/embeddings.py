"""Benchmark: one all-MiniLM-L6-v2 query embedding, fp32 transformers path against the `auto`
path (bf16 prepacked, lean BERT forward, on a CPU with bf16 instructions), and the hybrid router
decision against one embedding. All measured in this run, interleaved, on this machine.

1. One query embedding (`embed([query])`, tokenizer included, one torch thread, as the router
   runs it) over the labelled queries of tests/data/router_labelled.jsonl: p50 of each path and
   the speedup fp32 p50 / new p50 (goal >= 2x).
2. The cosine of each query's new vector to its fp32 vector: the minimum (goal >= 0.999).
3. The hybrid (cascade) router decision with the new path, p50, over one new embedding p50
   (goal <= 1.0x); also the neural-only decision (an embedding plus the index similarity), the
   hybrid's cost whenever its keyword stage does not decide.

Ends with one JSON line of the ratios.

    .venv/bin/python benchmarks/embeddings.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "router" / "experts.yaml"
LABELLED = ROOT / "tests" / "data" / "router_labelled.jsonl"


def timed(calls: dict[str, Callable[[str], object]], queries: list[str], repeat: int) -> dict:
    """p50 (ms) of each call over the queries, the calls interleaved per query."""
    for query in queries[:5]:  # warm-up
        for call in calls.values():
            call(query)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for query in queries:
            for name, call in calls.items():
                start = time.perf_counter()
                call(query)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("LARGEFORGE_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT / "src"))
    from largeforge.adapters.embeddings.transformers import TransformersEmbeddingModel
    from largeforge.application.classifiers import (
        HybridClassifier,
        KeywordClassifier,
        NeuralClassifier,
    )
    from largeforge.entrypoints.logs import configure_logging
    from largeforge.routing_config import load_router_settings

    configure_logging()
    queries = [json.loads(line)["query"] for line in LABELLED.read_text().splitlines()]
    fp32 = TransformersEmbeddingModel(dtype="float32")
    new = TransformersEmbeddingModel(dtype="auto")
    lengths = sorted(len(new.tokenize(q)) for q in queries)

    cosines = [float((new.embed([q]).vectors @ fp32.embed([q]).vectors.T).item()) for q in queries]
    policy = load_router_settings(CONFIG).policy()
    keyword = KeywordClassifier(policy)
    neural = NeuralClassifier(policy, new)
    hybrid = HybridClassifier(keyword, neural, policy)
    p50 = timed(
        {
            "fp32 embedding": lambda q: fp32.embed([q]),
            "new embedding": lambda q: new.embed([q]),
            "hybrid decision": hybrid.classify,
            "neural decision": neural.classify,
        },
        queries,
        args.repeat,
    )
    speedup = p50["fp32 embedding"] / p50["new embedding"]
    versus = p50["hybrid decision"] / p50["new embedding"]
    neural_versus = p50["neural decision"] / p50["new embedding"]
    print(
        f"{len(queries)} queries x {args.repeat}, tokens per query: median "
        f"{lengths[len(lengths) // 2]}, max {lengths[-1]}; one torch thread; "
        f"new path: dtype {new.dtype}"
    )
    print(f"one embedding, fp32 transformers: p50 {p50['fp32 embedding']:.3f} ms")
    print(f"one embedding, new ({new.dtype}):     p50 {p50['new embedding']:.3f} ms")
    print(f"speedup fp32 / new: {speedup:.2f}x  (goal >= 2x)")
    print(f"cosine new to fp32: min {min(cosines):.6f}, mean {statistics.fmean(cosines):.6f}"
          "  (goal >= 0.999)")  # fmt: skip
    print(f"hybrid decision: p50 {p50['hybrid decision']:.3f} ms = {versus:.2f}x one embedding"
          "  (goal <= 1.0x)")  # fmt: skip
    print(f"neural decision: p50 {p50['neural decision']:.3f} ms = {neural_versus:.2f}x one "
          "embedding (the hybrid when its keywords do not decide)")  # fmt: skip
    result = {
        "embedding_speedup": round(speedup, 3),
        "min_cosine": round(min(cosines), 6),
        "router_decision_vs_embedding": round(versus, 3),
        "neural_decision_vs_embedding": round(neural_versus, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
