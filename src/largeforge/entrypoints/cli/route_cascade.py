"""`largeforge route eval --cascade`: read the labelled requests, run, print the comparison."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from largeforge.application.cascade_evaluation import (
    CascadeCase,
    CascadeEvaluation,
)
from largeforge.application.cascade_evaluation import (
    evaluate_cascade as run_evaluation,
)
from largeforge.domain.errors import ConfigError
from largeforge.domain.eval_matching import MatchKind

_OWN = frozenset({"query", "messages", "reference", "match", "ignore_case", "model", "stream"})


def read_cases(path: Path, max_tokens: int) -> list[CascadeCase]:
    """The labelled requests; a bad row is a `ConfigError` naming its line."""
    if not path.is_file():
        raise ConfigError(f"labelled file not found: {path}")
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            cases.append(_case(path, number, line, max_tokens))
    if not cases:
        raise ConfigError(f"{path}: no labelled requests")
    return cases


def _case(path: Path, number: int, line: str, max_tokens: int) -> CascadeCase:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    messages = row.get("messages")
    if messages is None and isinstance(row.get("query"), str):
        messages = [{"role": "user", "content": row["query"]}]
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        raise ConfigError(f"{where}: needs 'query' (a string) or 'messages' (a list of objects)")
    if not isinstance(row.get("reference"), str):
        raise ConfigError(f"{where}: needs 'reference', the right answer as a string")
    try:
        match = MatchKind(row.get("match", "exact"))
    except ValueError:
        kinds = ", ".join(k.value for k in MatchKind)
        raise ConfigError(f"{where}: 'match' must be one of {kinds}") from None
    body: dict[str, Any] = {"temperature": 0, "max_tokens": max_tokens}
    body |= {k: v for k, v in row.items() if k not in _OWN}
    body["messages"] = messages
    return CascadeCase(body, row["reference"], match, bool(row.get("ignore_case")), number)


def evaluate_cascade(
    container: Any, name: str, labelled: Path, max_tokens: int, json_output: bool
) -> int:
    service = container.cascades()
    cascade = service.cascades.get(name)
    if cascade is None:
        names = ", ".join(service.cascades) or "none"
        raise ConfigError(f"no cascade '{name}' in the router config; cascades: {names}")
    cases = read_cases(labelled, max_tokens)

    async def run() -> CascadeEvaluation:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), desc=f"cascade {name}", unit="row", file=sys.stderr)
        try:
            await service.router.check_health()
            return await run_evaluation(service, cascade, cases, progress=lambda: bar.update())
        finally:
            bar.close()
            await service.router.aclose()

    result = asyncio.run(run())
    if json_output:
        print(json.dumps(as_json(result), indent=2))
    else:
        print_table(result)
    return 0


def as_json(result: CascadeEvaluation) -> dict[str, Any]:
    return {
        "cascade": result.cascade,
        "steps": list(result.steps),
        "strategies": {
            s.name: {
                "accuracy": round(s.accuracy, 4),
                "correct": s.correct,
                "rows": s.rows,
                "cost": round(s.cost, 6),
            }
            | ({"answered_at_step": _step_shares(s.shares())} if s.by_step else {})
            for s in result.strategies
        },
        "rows": [
            {"line": c.line, "step": c.step, "correct": {
                "cascade": c.cascade, "always-smallest": c.smallest, "always-largest": c.largest}}
            for c in result.cases
        ],
    }  # fmt: skip


def _step_shares(shares: list[float]) -> dict[str, float]:
    named = {str(i): round(v, 4) for i, v in enumerate(shares) if i}
    return named | {"none": round(shares[0], 4)}


def print_table(result: CascadeEvaluation) -> None:
    steps = result.steps
    print(f"cascade {result.cascade}: {' -> '.join(steps)}")
    print(f"  {'strategy':<17}{'accuracy':>10}{'correct':>9}{'cost':>12}")
    for s in result.strategies:
        print(f"  {s.name:<17}{s.accuracy:>10.1%}{f'{s.correct}/{s.rows}':>9}{s.cost:>12.6f}")
    shares = result.cascade_score.shares()
    parts = [f"step {i} ({steps[i - 1]}) {shares[i]:.1%}" for i in range(1, len(shares))]
    print("  answered at " + ", ".join(parts) + f", by no step {shares[0]:.1%}")
    largest = result.largest.cost
    if largest > 0:
        print(f"  the cascade cost {result.cascade_score.cost / largest:.1%} of always-largest")
