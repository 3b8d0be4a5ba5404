"""Benchmark: the cost of grammar-constrained decoding in `largeforge serve`.

Starts `largeforge serve` on the embedded SmolLM2-135M-Instruct and measures, in this run:

1. 16 concurrent chat clients asking for a `json_schema` answer (every token masked by the
   grammar) against the same 16 clients unconstrained, each generating as many tokens as its
   constrained answer had (`ignore_eos`, `max_tokens` = that length, so the batch empties the
   same way): generated tokens/s of both and their ratio (goal: constrained >= 0.9x).
2. The compile cache: the latency of a 1-token request with a schema the server has not seen
   (compiles it), of the same request again (cached), and of the same request unconstrained;
   the second request must pay no compile: its extra latency over the unconstrained one is
   printed beside the first one's.

With `--backend vllm --python .venv-vllm/bin/python` the same runs on the vLLM engine.

    .venv/bin/python benchmarks/structured.py [--clients 16] [--rounds 3] [--backend vllm ...]

Ends with one JSON line of the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_throughput import QUESTIONS, free_port, server

MODEL = "smollm2-135m-instruct"
RECORD = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
        "summary": {"type": "string", "maxLength": 120},
        "rating": {"type": "string", "enum": ["low", "medium", "high"]},
    },
    "required": ["title", "year", "tags", "summary", "rating"],
    "additionalProperties": False,
}


def request(question: str, tokens: int, schema: dict[str, Any] | None, **extra: Any) -> Any:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{question} Answer as a JSON record."}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "record", "schema": schema, "strict": True},
        }
    return body | extra


async def post(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{base}/v1/chat/completions", json=body, timeout=900)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def concurrent(base: str, bodies: list[dict[str, Any]]) -> tuple[float, list[int]]:
    """Generated tokens/s of `bodies` sent at once, and each answer's completion tokens."""
    async with httpx.AsyncClient() as client:
        await post(client, base, request("Warm up.", 4, None))
        start = time.perf_counter()
        answers = await asyncio.gather(*(post(client, base, b) for b in bodies))
        elapsed = time.perf_counter() - start
    counts = [int(a["usage"]["completion_tokens"]) for a in answers]
    for answer, body in zip(answers, bodies, strict=True):
        if "response_format" in body:  # every constrained answer is the schema's
            json.loads(answer["choices"][0]["message"]["content"])
    return sum(counts) / elapsed, counts


def one_token_ms(base: str, schema: dict[str, Any] | None) -> float:
    body = request(QUESTIONS[0], 1, schema)
    start = time.perf_counter()
    response = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return elapsed


def compile_cost(base: str, repeats: int = 15) -> tuple[float, float, float]:
    """Median ms of a 1-token request: with a new schema, the same schema again, no schema."""
    first, again, plain = [], [], []
    for _ in range(repeats):
        schema = json.loads(json.dumps(RECORD))
        schema["properties"][f"field_{uuid.uuid4().hex[:8]}"] = {"type": "boolean"}
        first.append(one_token_ms(base, schema))
        again.append(one_token_ms(base, schema))
        plain.append(one_token_ms(base, None))
    return statistics.median(first), statistics.median(again), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--python", default=sys.executable, help="the serving interpreter")
    args = parser.parse_args()

    env = os.environ | {"LARGEFORGE_LOG_JSON": "1"}
    port = free_port()
    command = [args.python, "-m", "largeforge.entrypoints.cli.main", "serve", "--model", MODEL]
    command += ["--port", str(port), "--max-num-seqs", str(args.clients)]
    command += ["--backend", args.backend]
    log = f"/tmp/largeforge-bench-structured-{args.backend}.log"
    with server(command, port, env, log) as base:
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.clients)]
        constrained_bodies = [request(q, args.max_tokens, RECORD) for q in questions]
        constrained = plain = 0.0
        for _ in range(args.rounds):  # alternate, keep each one's best: the load drifts
            rate, counts = asyncio.run(concurrent(base, constrained_bodies))
            constrained = max(constrained, rate)
            tokens = round(statistics.mean(counts))
            # the same lengths request by request, so the batch empties the same way
            plain_bodies = [
                request(q, n, None, ignore_eos=True) for q, n in zip(questions, counts, strict=True)
            ]
            rate, _ = asyncio.run(concurrent(base, plain_bodies))
            plain = max(plain, rate)
        first_ms, again_ms, plain_ms = compile_cost(base)
    ratio = constrained / plain
    print(f"engine: {args.backend}; {args.clients} concurrent clients, {tokens} tokens on average")
    print(f"  unconstrained: {plain:.1f} generated tok/s")
    print(f"  json_schema:   {constrained:.1f} generated tok/s")
    print(f"  ratio constrained / unconstrained: {ratio:.2f}x (goal >= 0.9x)")
    print("1-token request, median ms:")
    print(f"  new schema (compiles): {first_ms:.1f}; same schema again: {again_ms:.1f}; "
          f"no schema: {plain_ms:.1f}")  # fmt: skip
    print(f"  extra over no schema: first {first_ms - plain_ms:.1f} ms, "
          f"again {again_ms - plain_ms:.1f} ms (goal: again pays no compile)")  # fmt: skip
    print(json.dumps({
        "benchmark": "structured", "backend": args.backend,
        "constrained_over_unconstrained": round(ratio, 3),
        "first_over_plain_ms": round(first_ms - plain_ms, 2),
        "again_over_plain_ms": round(again_ms - plain_ms, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
