"""A cascade of two real experts on loopback: the tiny random model first, the embedded
SmolLM2-135M second, each a `largeforge serve` process, the router in front, the official
`openai` client and `largeforge route eval --cascade` as a real subprocess.

The tiny model writes JSON under the grammar but never closes a free string, so its answers
are cut at max_tokens and fail the JSON-schema check; with an enum to choose from it closes
at once and passes. SmolLM2 closes its strings: the escalated requests get its valid answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import yaml

from tests.e2e.server import free_port, run_cli, spawn, stop, wait_ready

pytestmark = pytest.mark.slow
COUNTRIES = ("France", "Italy", "Japan", "Spain", "Egypt", "Canada")
FREE = {"type": "object", "properties": {"capital": {"type": "string"}},
        "required": ["capital"], "additionalProperties": False}  # fmt: skip
CHOICE = {"type": "object", "properties": {"capital": {"enum": ["Paris", "Rome", "Tokyo"]}},
          "required": ["capital"], "additionalProperties": False}  # fmt: skip


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from tests.support import build_tiny_model

    root = tmp_path_factory.mktemp("cascade")
    tiny = build_tiny_model(root / "tiny")
    ports = {"tiny": free_port(), "smol": free_port()}
    processes = [
        spawn("serve", "--model", str(tiny), "--served-model-name", "tiny",
              port=ports["tiny"], log=root / "tiny.log"),
        spawn("serve", port=ports["smol"], log=root / "smol.log"),  # the embedded default
    ]  # fmt: skip
    check = [{"kind": "json_schema"}]
    config = {
        "default_expert": "smol",
        "classifier": "keyword",
        "experts": [
            {"name": "tiny", "cost": {"prompt": 0.01, "completion": 0.02},
             "replicas": [{"url": f"http://127.0.0.1:{ports['tiny']}/v1"}]},
            {"name": "smol", "cost": {"prompt": 0.5, "completion": 1.0},
             "replicas": [{"url": f"http://127.0.0.1:{ports['smol']}/v1"}]},
        ],
        "cascades": [{"name": "json-first", "steps": [
            {"expert": "tiny", "checks": check}, {"expert": "smol", "checks": check}]}],
    }  # fmt: skip
    path = root / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        for name, process in zip(ports, processes, strict=True):
            wait_ready(process, f"http://127.0.0.1:{ports[name]}", root / f"{name}.log")
        port = free_port()
        processes.append(spawn("route serve", str(path), port=port, log=root / "router.log"))
        wait_ready(processes[-1], f"http://127.0.0.1:{port}", root / "router.log")
        yield f"http://127.0.0.1:{port}", path
    finally:
        for process in processes:
            stop(process)


def ask(client: openai.OpenAI, country: str, schema: dict[str, Any]) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="json-first",
        messages=[{"role": "user", "content": f"What is the capital of {country}? Reply in JSON."}],
        response_format=response_format(schema),  # type: ignore[arg-type]
        max_tokens=24,
        temperature=0,
    )


def test_answers_that_fail_the_schema_are_escalated_and_none_reaches_the_client(
    router: tuple[str, Path],
) -> None:
    base, _config = router
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
    steps: dict[str, list[str]] = {"free": [], "choice": []}
    for country in COUNTRIES:
        for kind, schema in (("free", FREE), ("choice", CHOICE)):
            raw = ask(client, country, schema)
            reply = raw.parse()
            jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
            step = raw.headers["x-largeforge-cascade-step"]
            reason = raw.headers["x-largeforge-cascade-reason"]
            steps[kind].append(step)
            if step == "2":
                assert reason.startswith("1:tiny: json_schema: the answer is not JSON (cut at")
                assert reason.endswith("2:smol: json_schema passed")
                assert raw.headers["x-largeforge-expert"] == "smol"
            else:
                assert reason == "1:tiny: json_schema passed"
                assert raw.headers["x-largeforge-expert"] == "tiny"
    assert steps == {"free": ["2"] * len(COUNTRIES), "choice": ["1"] * len(COUNTRIES)}
    stream = client.chat.completions.create(
        model="json-first",
        messages=[{"role": "user", "content": "What is the capital of France? Reply in JSON."}],
        response_format=response_format(FREE),  # type: ignore[arg-type]
        max_tokens=24, temperature=0, stream=True,
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), FREE)
    assert {c.model for c in chunks} == {"smol"}  # only the answer that passed was streamed
    metrics = httpx.get(f"{base}/metrics", timeout=5).text
    escalated = '{cascade="json-first",reason="json_schema",step="1"} 7.0'
    assert f"largeforge_router_cascade_escalations_total{escalated}" in metrics


def test_route_eval_compares_the_cascade_with_always_smallest_and_largest(
    router: tuple[str, Path], tmp_path: Path
) -> None:
    _base, config = router
    rows = [
        {"query": f"What is the capital of {country}? Reply in JSON.", "reference": capital,
         "match": "contains", "response_format": response_format(schema), "max_tokens": 24}
        for country, capital in (("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"))
        for schema in (FREE, CHOICE)
    ]  # fmt: skip
    labelled = tmp_path / "capitals.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = run_cli("route", "eval", str(config), str(labelled), "--cascade", "json-first")
    assert table.returncode == 0, table.stderr
    for line in ("cascade json-first: tiny -> smol", "always-smallest", "always-largest",
                 "answered at step 1 (tiny) 50.0%, step 2 (smol) 50.0%, by no step 0.0%",
                 "of always-largest"):  # fmt: skip
        assert line in table.stdout, table.stdout
    done = run_cli(
        "route", "eval", str(config), str(labelled), "--cascade", "json-first", "--json-output"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    strategies = report["strategies"]
    assert {s: strategies[s]["rows"] for s in strategies} == dict.fromkeys(strategies, 6)
    assert strategies["cascade"]["answered_at_step"] == {"1": 0.5, "2": 0.5, "none": 0.0}
    # the cascade's answers are the smallest's where it stopped at step 1, the largest's after
    for row in report["rows"]:
        answered_by = "always-smallest" if row["step"] == 1 else "always-largest"
        assert row["correct"]["cascade"] == row["correct"][answered_by], row
    costs = {s: strategies[s]["cost"] for s in strategies}
    assert costs["always-smallest"] < costs["cascade"] < costs["always-largest"], costs
    assert sum(r["correct"]["cascade"] for r in report["rows"]) == strategies["cascade"]["correct"]
