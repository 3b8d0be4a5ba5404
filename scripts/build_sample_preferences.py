"""Build the bundled preference sample from the bundled chat sample (deterministic, stdlib only).

For each single-turn conversation, `chosen` is its own answer and `rejected` the answer to a
different question (a fixed derangement), so the preferred answer is the one that fits the prompt.

    python scripts/build_sample_preferences.py
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "largeforge" / "resources" / "data"


def main() -> None:
    rows = [json.loads(line) for line in (DATA / "sample_chat.jsonl").read_text().splitlines()]
    single = [r["messages"] for r in rows if len(r["messages"]) == 2]
    out = []
    for i, messages in enumerate(single):
        other = single[(i * 7 + 13) % len(single)]
        if other[1]["content"] == messages[1]["content"]:
            continue
        out.append(
            {
                "prompt": [messages[0]],
                "chosen": [messages[1]],
                "rejected": [{"role": "assistant", "content": other[1]["content"]}],
            }
        )
    path = DATA / "sample_preferences.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    print(f"wrote {len(out)} rows to {path}")


if __name__ == "__main__":
    main()
