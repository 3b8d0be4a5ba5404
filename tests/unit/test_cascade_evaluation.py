"""`route eval --cascade`: the cascade against always-smallest and always-largest, over
scripted fake experts (the use case), and the reading of the labelled file (the CLI)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from largeforge.application.cascade_evaluation import CascadeCase, evaluate_cascade
from largeforge.container import RouterContainer
from largeforge.domain.errors import ConfigError
from largeforge.domain.eval_matching import MatchKind
from largeforge.entrypoints.cli.route_cascade import as_json, read_cases
from largeforge.routing_config import RouterSettings
from tests.router_fakes import FakeReplicas
from tests.unit.test_router_cascade import config

CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Peru": "Lima"}


def small_reply(body: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Sure and right about France and Italy; unsure and wrong about the others."""
    question = body["messages"][-1]["content"]
    country = question.split()[-1].rstrip("?")
    if country in ("France", "Italy"):
        return {"role": "assistant", "content": CAPITALS[country]}, [-0.1]
    return {"role": "assistant", "content": "Berlin"}, [-4.0]


def large_reply(body: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    country = body["messages"][-1]["content"].split()[-1].rstrip("?")
    return {"role": "assistant", "content": f"It is {CAPITALS[country]}."}, [-0.2]


def test_the_cascade_is_compared_with_always_smallest_and_always_largest() -> None:
    replicas = FakeReplicas()
    container = RouterContainer(settings=RouterSettings.model_validate(config()))
    container.client_factory.override(replicas)
    service = container.cascades()
    replicas.script("small-1").reply = small_reply
    for name in ("large-1", "large-2"):
        replicas.script(name).reply = large_reply
    cases = [
        CascadeCase(
            {"messages": [{"role": "user", "content": f"What is the capital of {c}?"}]},
            capital,
            MatchKind.CONTAINS,
        )
        for c, capital in CAPITALS.items()
    ]
    ticks: list[int] = []
    result = asyncio.run(
        evaluate_cascade(service, service.cascades["sure"], cases, lambda: ticks.append(1))
    )
    cascade, smallest, largest = result.strategies
    assert (cascade.correct, smallest.correct, largest.correct) == (4, 2, 4)
    assert cascade.shares() == [0.0, 0.5, 0.5]
    # every answer: 3 prompt + 3 completion tokens; small 0.1/0.2, large 1.0/2.0 per 1k
    small, large = 0.0009, 0.009
    assert cascade.cost == pytest.approx(4 * small + 2 * large)
    assert smallest.cost == pytest.approx(4 * small)
    assert largest.cost == pytest.approx(4 * large)
    # the large expert answered the 2 escalated rows once each, and the other 2 once more
    large_calls = sum(len(replicas.clients[n].received) for n in ("large-1", "large-2"))
    assert large_calls == 4
    assert len(replicas.clients["small-1"].received) == 4
    assert len(ticks) == 4
    report = as_json(result)
    assert report["strategies"]["cascade"]["answered_at_step"] == {"1": 0.5, "2": 0.5, "none": 0.0}
    assert report["strategies"]["always-largest"]["accuracy"] == 1.0


def test_rows_the_cascade_cannot_answer_count_as_wrong_at_no_step() -> None:
    replicas = FakeReplicas()
    container = RouterContainer(settings=RouterSettings.model_validate(config()))
    container.client_factory.override(replicas)
    service = container.cascades()
    for name in ("small-1", "large-1", "large-2"):
        replicas.script(name).answer = {"role": "assistant", "content": "not json"}
    fmt = {"type": "json_object"}
    cases = [CascadeCase({"messages": [{"role": "user", "content": "x"}], "response_format": fmt},
                         "{}", MatchKind.JSON_SCHEMA)]  # fmt: skip
    result = asyncio.run(evaluate_cascade(service, service.cascades["json"], cases))
    assert result.cascade_score.shares() == [1.0, 0.0, 0.0]
    assert result.cascade_score.correct == 0
    assert result.cascade_score.cost == pytest.approx(0.0009 + 0.009)  # both steps were paid


def test_labelled_requests_are_read_with_defaults_and_bad_rows_name_their_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cases.jsonl"
    rows = [
        {"query": "Capital of France?", "reference": "Paris", "match": "contains"},
        {"messages": [{"role": "user", "content": "JSON please"}], "reference": "{}",
         "match": "json_schema", "response_format": {"type": "json_object"}, "max_tokens": 9},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    first, second = read_cases(path, max_tokens=32)
    assert first.body == {
        "temperature": 0, "max_tokens": 32,
        "messages": [{"role": "user", "content": "Capital of France?"}],
    }  # fmt: skip
    assert first.match is MatchKind.CONTAINS
    assert second.body["max_tokens"] == 9
    assert second.body["response_format"]["type"] == "json_object"
    bad = [
        ('{"query": "x"}', ":1: needs 'reference'"),
        ('{"reference": "x"}', ":1: needs 'query'"),
        ('{"query": "x", "reference": "y", "match": "fuzzy"}', ":1: 'match' must be one of"),
        ("[1]", ":1: expected a JSON object"),
        ("{", ":1: not JSON"),
    ]
    for line, message in bad:
        path.write_text(line + "\n")
        with pytest.raises(ConfigError, match="cases.jsonl" + message):
            read_cases(path, 32)
