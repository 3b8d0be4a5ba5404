#!/usr/bin/env python3
"""Make the bundled samples of the KTO and GRPO examples (deterministic; run from the repo root).

``sample_unpaired.jsonl`` (KTO): one labelled completion per row of ``sample_preferences.jsonl``,
``{"prompt": [...], "completion": [...], "label": true|false}``. Even rows give their chosen
answer (label true), odd rows their rejected one (label false), so no prompt appears with both:
the rows are unpaired, as KTO's data usually is.

``sample_arithmetic.jsonl`` (GRPO): every sum ``a + b`` and difference ``a - b`` (``a >= b``) of
whole numbers 0 to 12, shuffled with seed 0, as ``{"prompt": "What is 7 + 5? Reply with only
the number.", "reference": "12", "operation": "+"}``. The reference answer is what GRPO's
``numeric_answer`` reward checks.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path("src/largeforge/resources/data")


def unpaired() -> list[dict[str, object]]:
    rows = []
    lines = (DATA / "sample_preferences.jsonl").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        pair = json.loads(line)
        good = index % 2 == 0
        completion = pair["chosen"] if good else pair["rejected"]
        rows.append({"prompt": pair["prompt"], "completion": completion, "label": good})
    return rows


def arithmetic() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for a in range(13):
        for b in range(13):
            rows.append(_row(a, "+", b, a + b))
            if a >= b:
                rows.append(_row(a, "-", b, a - b))
    random.Random(0).shuffle(rows)
    return rows


def _row(a: int, op: str, b: int, answer: int) -> dict[str, object]:
    prompt = f"What is {a} {op} {b}? Reply with only the number."
    return {"prompt": prompt, "reference": str(answer), "operation": op}


def write(name: str, rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (DATA / name).write_text(text, encoding="utf-8")
    print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    write("sample_unpaired.jsonl", unpaired())
    write("sample_arithmetic.jsonl", arithmetic())
