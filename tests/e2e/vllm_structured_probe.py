"""Generate with output constraints on `VllmInferenceEngine`; run by test_vllm_structured.py.

Runs in the vLLM environment: `python vllm_structured_probe.py MODEL_DIR OUT_JSON`. Writes one
JSON object: each case's text, finish reason and token count, and the errors of the cases that
must fail. The test validates them in the main environment (jsonschema lives there).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

# The schema keeps a random model's output finite: bounded strings and arrays, bounded integers.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "admin": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age", "admin", "tags"],
    "additionalProperties": False,
}
JSON_SEEDS = (0, 1, 2)
REGEX = r"[a-z]{3,8}@[a-z]{2,6}\.(com|org|net)"
CHOICES = ("red", "green", "blue")
TOOL_BEGIN = '<tool_call>\n{"name": "f", "arguments": '
TOOL_END = "}\n</tool_call>"
ARGUMENTS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"enum": [1, 2, 3]}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
# at_least_one: the text starts with the call; stop_after_first: nothing follows it (a random
# model would write free text after the call until max_tokens). A structural tag's JSON takes any
# whitespace (vLLM's `disable_any_whitespace` reaches only `json` requests): without
# `max_whitespace_cnt` the random model writes whitespace runs until max_tokens.
TOOL_TAG: dict[str, Any] = {
    "type": "structural_tag",
    "format": {
        "type": "triggered_tags",
        "triggers": ["<tool_call>"],
        "tags": [
            {
                "type": "tag",
                "begin": TOOL_BEGIN,
                "content": {
                    "type": "json_schema",
                    "json_schema": ARGUMENTS,
                    "max_whitespace_cnt": 1,
                },
                "end": TOOL_END,
            }
        ],
        "at_least_one": True,
        "stop_after_first": True,
    },
}
INVALID_SCHEMA: dict[str, Any] = {"type": "objekt"}
UNSUPPORTED_SCHEMA: dict[str, Any] = {"type": "integer", "multipleOf": 3}  # xgrammar refuses it
MAX_TOKENS = 200


async def main(model_dir: str, out: str) -> None:
    from largeforge.adapters.vllm.engine import VllmInferenceEngine
    from largeforge.domain.errors import LargeForgeError
    from largeforge.domain.generation import SamplingParams
    from largeforge.domain.tools import Constraint, ConstraintKind

    engine = VllmInferenceEngine(model_dir, "tiny", max_model_len=512, max_num_seqs=8)
    prompt = engine.tokenize("Answer in the requested format:")

    async def run(constraint: Constraint, seed: int = 0, **extra: Any) -> dict[str, Any]:
        params = SamplingParams(
            max_tokens=MAX_TOKENS, temperature=1.0, seed=seed, constraint=constraint, **extra
        )
        text, tokens, finish = "", 0, None
        async for step in engine.generate(prompt, params):
            text, tokens, finish = text + step.text, tokens + 1, step.finish_reason
        return {"text": text, "tokens": tokens, "finish": finish and finish.value}

    def error(exc: LargeForgeError) -> dict[str, Any]:
        return {"type": type(exc).__name__, "message": str(exc), "param": getattr(exc, "param", 1)}

    results: dict[str, Any] = {}
    try:
        schema = Constraint.json_schema(SCHEMA)
        started = time.perf_counter()
        engine.check_constraint(schema)
        results["check_seconds"] = time.perf_counter() - started
        cases = {f"json_{seed}": run(schema, seed) for seed in JSON_SEEDS}
        cases["regex"] = run(Constraint(ConstraintKind.REGEX, REGEX))
        cases["choice"] = run(Constraint(ConstraintKind.CHOICE, json.dumps(list(CHOICES))))
        cases["choice_ignore_eos"] = run(
            Constraint(ConstraintKind.CHOICE, json.dumps(list(CHOICES))), seed=1, ignore_eos=True
        )
        cases["tool"] = run(Constraint.structural_tag(TOOL_TAG))
        started = time.perf_counter()
        outputs = await asyncio.gather(*cases.values())
        results["generate_seconds"] = time.perf_counter() - started
        results["cases"] = dict(zip(cases, outputs, strict=True))
        try:
            engine.check_constraint(Constraint.json_schema(INVALID_SCHEMA))
            results["invalid_check"] = None
        except LargeForgeError as exc:
            results["invalid_check"] = error(exc)
        try:  # straight to vLLM, unchecked: its refusal on add_request
            await run(Constraint.json_schema(UNSUPPORTED_SCHEMA))
            results["unsupported_generate"] = None
        except LargeForgeError as exc:
            results["unsupported_generate"] = error(exc)
    finally:
        engine.close()
        with open(out, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
