"""Benchmark: routing decision latency of each classifier, and the router's HTTP overhead.

All measured in this run, on this machine:

1. Decision latency (p50/p99) of the keyword, embedding (neural) and hybrid classifiers over the
   labelled queries of tests/data/router_labelled.jsonl with the packaged all-MiniLM-L6-v2
   (dtype auto: bf16 prepacked on a CPU with bf16 instructions), against the baseline of one
   bare MiniLM embedding of the same queries (goal: hybrid p50 at most 6 ms on 2 cores, where
   one fp32 embedding took 4.8 ms when the goal was set; benchmarks/embeddings.py compares the
   fp32 and bf16 paths).
2. Router overhead: a fake expert (a Litestar app answering a fixed chat completion at once) is
   called directly and through `largeforge route serve` (keyword classifier, one replica),
   sequentially for p50 latency and with 8 concurrent clients for requests/s. Overhead = p50
   through the router minus p50 direct (goal at most 2 ms).

    .venv/bin/python benchmarks/router.py [--requests 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "router" / "experts.yaml"
LABELLED = ROOT / "tests" / "data" / "router_labelled.jsonl"
ANSWER = {
    "id": "chatcmpl-fake",
    "object": "chat.completion",
    "created": 0,
    "model": "fake",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def classifier_latency(repeat: int) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from largeforge.adapters.embeddings.transformers import TransformersEmbeddingModel
    from largeforge.application.classifiers import (
        HybridClassifier,
        KeywordClassifier,
        NeuralClassifier,
    )
    from largeforge.routing_config import load_router_settings

    policy = load_router_settings(CONFIG).policy()
    queries = [json.loads(line)["query"] for line in LABELLED.read_text().splitlines()]
    model = TransformersEmbeddingModel()
    keyword = KeywordClassifier(policy)
    neural = NeuralClassifier(policy, model)
    hybrid = HybridClassifier(keyword, neural, policy)
    timed: dict[str, list[float]] = {"embedding (baseline)": [], "keyword": [], "neural": [],
                                     "hybrid": []}  # fmt: skip
    calls = {
        "embedding (baseline)": lambda q: model.embed([q]),
        "keyword": keyword.classify,
        "neural": neural.classify,
        "hybrid": hybrid.classify,
    }
    for query in queries[:5]:  # warm-up
        for call in calls.values():
            call(query)
    for _ in range(repeat):
        for query in queries:
            for name, call in calls.items():
                start = time.perf_counter()
                call(query)
                timed[name].append((time.perf_counter() - start) * 1000)
    print(f"\n1. Decision latency over {len(queries)} queries x {repeat} (ms)")
    print(f"   {'classifier':<22}{'p50':>8}{'p99':>8}")
    for name, values in timed.items():
        print(f"   {name:<22}{percentile(values, 0.5):>8.3f}{percentile(values, 0.99):>8.3f}")
    base = percentile(timed["embedding (baseline)"], 0.5)
    hyb = percentile(timed["hybrid"], 0.5)
    print(f"   hybrid p50 / one embedding p50 = {hyb / base:.2f}x  (goal: hybrid p50 <= 6 ms)")


def fake_expert(port: int) -> None:
    """Run the instant fake expert (a separate process)."""
    import uvicorn
    from litestar import Litestar, get, post

    @get("/v1/models", sync_to_thread=False)
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @post("/v1/chat/completions", sync_to_thread=False, status_code=200)
    def chat() -> dict[str, Any]:
        return ANSWER

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    sys.path.insert(0, str(ROOT / "src"))
    from largeforge.entrypoints.http.listen import listen

    app = Litestar([models, chat, health])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(
        sockets=[listen("127.0.0.1", port)]
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def sequential_p50(url: str, model: str, n: int) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "fix my python bug"}]}
    times = []
    with httpx.Client() as client:
        for i in range(n + 50):
            start = time.perf_counter()
            response = client.post(url, json=body)
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if i >= 50:
                times.append(elapsed * 1000)
    return statistics.median(times)


async def throughput(url: str, model: str, n: int, clients: int = 8) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "fix my python bug"}]}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                (await client.post(url, json=body)).raise_for_status()

        await worker(20)
        start = time.perf_counter()
        await asyncio.gather(*(worker(n // clients) for _ in range(clients)))
        return (n // clients * clients) / (time.perf_counter() - start)


def router_overhead(requests: int) -> None:
    expert_port, router_port = free_port(), free_port()
    expert = subprocess.Popen([sys.executable, __file__, "--fake-expert", str(expert_port)])
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "router.yaml"
        config.write_text(
            "name: auto\ndefault_expert: code\nclassifier: keyword\nstrategy: least_outstanding\n"
            "experts:\n  - name: code\n    keywords: {python: 1.0}\n    replicas:\n"
            f"      - url: http://127.0.0.1:{expert_port}/v1\n"
        )
        router = subprocess.Popen(
            [sys.executable, "-m", "largeforge.entrypoints.cli.main", "route", "serve",
             str(config), "--port", str(router_port)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait(f"http://127.0.0.1:{expert_port}/health")
            wait(f"http://127.0.0.1:{router_port}/health")
            direct = f"http://127.0.0.1:{expert_port}/v1/chat/completions"
            routed = f"http://127.0.0.1:{router_port}/v1/chat/completions"
            d50 = sequential_p50(direct, "fake", requests)
            r50 = sequential_p50(routed, "auto", requests)
            d_rps = asyncio.run(throughput(direct, "fake", requests))
            r_rps = asyncio.run(throughput(routed, "auto", requests))
        finally:
            for process in (router, expert):
                process.terminate()
                process.wait(10)
    print(f"\n2. Router overhead ({requests} sequential requests; 8 concurrent clients for req/s)")
    print(f"   direct to the fake expert : p50 {d50:.3f} ms, {d_rps:,.0f} req/s")
    print(f"   through the router        : p50 {r50:.3f} ms, {r_rps:,.0f} req/s")
    print(f"   overhead p50 = {r50 - d50:.3f} ms (goal <= 2 ms); "
          f"router/direct latency = {r50 / d50:.2f}x, req/s = {r_rps / d_rps:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fake-expert", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_expert:
        fake_expert(args.fake_expert)
        return
    classifier_latency(args.repeat)
    router_overhead(args.requests)


if __name__ == "__main__":
    main()
