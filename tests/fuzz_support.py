"""Schema-driven fuzzing of an app's POST endpoints from its own OpenAPI document.

Bodies come five ways: `positive` (valid by the document, with a `model` the app serves),
`negative` (schemathesis breaks one rule of the document: the answer must be a 4xx),
`hostile` (a valid body with one long string, deep or large array), `oversize` (a valid body
padded past the body limit) and `swap` (a valid body with one value anywhere in it of another
JSON type). Every
answer must be a status the document lists for the endpoint, match the schema documented for
it (errors: the OpenAI shape), and never be a 5xx.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ERROR_KEYS = {"message", "type", "param", "code"}


def served_schema(
    doc: dict[str, Any],
    models: list[str],
    vocab_size: int | None = None,
    require: str | None = None,
) -> Any:
    """The app's document narrowed to what its engines serve, which the document cannot know
    (they are loaded at start): `model` one of `models`, prompt token ids below `vocab_size`.
    With `require`, every body that has that field must send it, not null (so a rare optional
    field is exercised in every example rather than by chance)."""
    doc = copy.deepcopy(doc)
    for item in doc["paths"].values():
        post = item.get("post", {})
        body = post.get("requestBody", {}).get("content", {}).get("application/json", {})
        schema = body.get("schema", {})
        properties = schema.get("properties", {})
        if "model" in properties:
            properties["model"] = served_model(properties["model"], models)
        if "prompt" in properties and vocab_size is not None:
            _bound_ids(properties["prompt"], vocab_size)
        if require is not None and require in properties:
            schema["required"] = [*schema.get("required", []), require]
            field = properties[require]
            if "anyOf" in field:
                field["anyOf"] = [b for b in field["anyOf"] if b.get("type") != "null"]
    return schemathesis.openapi.from_dict(doc)


def served_model(field: Any, models: list[str]) -> dict[str, Any]:
    """`model` narrowed to the served ids, null kept where the document allows it (the
    default model answers): else the fuzzer sends null as data that must be refused."""
    nullable = any(branch.get("type") == "null" for branch in field.get("anyOf", []))
    return {"enum": [*models, None] if nullable else list(models)}


def _bound_ids(schema: Any, vocab_size: int) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema["maximum"] = vocab_size - 1
        for value in schema.values():
            _bound_ids(value, vocab_size)
    elif isinstance(schema, list):
        for value in schema:
            _bound_ids(value, vocab_size)


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


LONG_STRINGS = st.builds(
    _repeat, st.sampled_from(["a", "word ", "é", "😀", "\\\"", "\u0000", "<|im_end|>"]),
    st.integers(1_000, 40_000),
)  # fmt: skip
LARGE_ARRAYS = st.one_of(
    st.integers(500, 8_000).map(lambda n: [7] * n),
    st.integers(500, 3_000).map(lambda n: ["a b"] * n),
    st.integers(200, 2_000).map(lambda n: [{"role": "user", "content": "a"}] * n),
)
HOSTILE_FIELDS = ["prompt", "messages", "content", "stop", "user", "model", "metadata", "n"]
_MARK = "\u0001hostile\u0001"


@dataclass
class Hostile:
    """A valid body with one field replaced by a long string, a large array or an array
    `depth` deep (spliced into the JSON text: Python cannot nest that deep), or padded past
    the body limit."""

    field: str
    value: Any = None
    depth: int = 0

    def encode(self, body: dict[str, Any], max_body: int) -> bytes:
        body = copy.deepcopy(body)
        value: Any = _MARK if self.depth else self.value
        if self.field == "oversize":
            body["user"] = "x" * (max_body + 1)
        elif self.field == "content" and isinstance(body.get("messages"), list):
            body["messages"][-1]["content"] = value
        else:
            body[self.field] = value
        text = json.dumps(body)
        deep = "[" * self.depth + "]" * self.depth
        return text.replace(json.dumps(_MARK), deep).encode()


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value inside a JSON body, nested ones included."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return [path]
    return [path, *(p for key, item in items for p in _leaves(item, (*path, key)))]


@dataclass
class Swap:
    """A valid body with one value anywhere in it of another JSON type: a depth is picked
    first (so nested values, rarer than top-level ones, are hit as often), then a value."""

    depth: int
    pick: int
    value: Any

    def encode(self, body: dict[str, Any], max_body: int) -> bytes:
        body = copy.deepcopy(body)
        paths = [p for p in _leaves(body) if p]
        depths = sorted({len(p) for p in paths})
        if paths:
            level = depths[self.depth % len(depths)]
            at_level = [p for p in paths if len(p) == level]
            *parents, key = at_level[self.pick % len(at_level)]
            target: Any = body
            for step in parents:
                target = target[step]
            target[key] = self.value
        return json.dumps(body).encode()


OTHER_TYPES = st.sampled_from([None, True, -1, 1.5, 10**30, "x", [1], {"a": 1}, 0, "", [], {}])
FIELDS = st.sampled_from(HOSTILE_FIELDS)
HOSTILE = st.one_of(
    st.builds(Hostile, FIELDS, st.one_of(LONG_STRINGS, LARGE_ARRAYS)),
    st.builds(Hostile, FIELDS, depth=st.integers(2, 100_000)),
)
SWAP = st.builds(Swap, st.integers(0, 20), st.integers(0, 10_000), OTHER_TYPES)


@dataclass
class Tally:
    """What the fuzz sent and what came back."""

    statuses: Counter[int] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, str | None]] = field(default_factory=Counter)  # mode, param
    accepted_fields: Counter[str] = field(default_factory=Counter)  # of valid bodies answered 2xx

    @property
    def examples(self) -> int:
        return sum(self.statuses.values())

    def valid_accepted(self) -> float:
        """The share of valid (positive) bodies answered 2xx."""
        refused = sum(n for (mode, _param), n in self.refused.items() if mode == "positive")
        return 1 - refused / max(self.modes["positive"], 1)

    def share_2xx(self) -> float:
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return ok / max(self.examples, 1)


def fuzz(
    client: Any, schema: Any, path: str, *, examples: int, max_body: int, rejects: bool = True
) -> Tally:
    """Send `examples` bodies to `POST path`; raise on the first wrong answer. With `rejects`,
    every negative body must be refused with a 4xx."""
    operation = schema[path]["POST"]
    cases = {
        "positive": operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        "negative": operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    }
    valid = cases["positive"]
    tally = Tally()

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: slow here
    )
    @given(
        mode=st.sampled_from(
            ["positive"] * 10 + ["negative", "hostile", "oversize", "swap", "swap"]
        ),
        data=st.data(),
    )
    def run(mode: str, data: st.DataObject) -> None:
        case = data.draw(cases.get(mode, valid), label="case")
        request = case.as_transport_kwargs(base_url="http://testserver")
        headers = {k: v for k, v in request["headers"].items() if isinstance(v, str)}
        if "json" in request:
            content = json.dumps(request["json"]).encode()
        else:
            content = request.get("data") or b""
        if mode == "oversize":
            content = Hostile("oversize").encode(case.body, max_body)
        elif mode in ("hostile", "swap"):
            mutation = data.draw(HOSTILE if mode == "hostile" else SWAP, label=mode)
            content = mutation.encode(case.body, max_body)
        checks = list(CONFORMANCE)
        if mode == "negative" and rejects and len(content) <= max_body:
            checks.append(negative_data_rejection)  # a larger one is refused with 413, rightly
        response = client.post(path, content=content, headers=headers)
        tally.statuses[response.status_code] += 1
        tally.modes[mode] += 1
        assert response.status_code < 500, (content[:1000], response.text[:1000])
        if mode == "positive" and response.status_code < 300 and isinstance(case.body, dict):
            tally.accepted_fields.update(k for k, v in case.body.items() if v not in (None, []))
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == ERROR_KEYS, error
            tally.refused[(mode, error["param"])] += 1
        case.validate_response(response, checks=checks)

    run()
    return tally
