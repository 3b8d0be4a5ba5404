"""The stdlib JSON Schema checker agrees with `jsonschema` (draft 2020-12) on what it supports,
and names what it does not support instead of passing it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.domain.schema_check import check_instance, unsupported_keywords
from tests.json_schemas import json_schemas

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-50, 50) | st.floats(-50, 50, allow_nan=False)
    | st.text(alphabet="abcXYZ -_", max_size=6),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=6), inner,
                      max_size=4),
    max_leaves=12,
)  # fmt: skip


def valid_for(schema: Any) -> st.SearchStrategy[Any]:
    """Values built to satisfy the (generated) schema, so agreement is tested on passes too."""
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "integer":
        return st.integers(schema["minimum"], schema["maximum"])
    if kind == "string":
        return st.text(alphabet="abc ", max_size=schema["maxLength"])
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(
            valid_for(schema["items"]), min_size=schema["minItems"], max_size=schema["maxItems"]
        )
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {k: valid_for(v) for k, v in schema["properties"].items() if k in required},
        optional={k: valid_for(v) for k, v in schema["properties"].items() if k not in required},
    )


@st.composite
def schema_and_value(draw: st.DrawFn) -> tuple[dict[str, Any], Any]:
    schema = draw(json_schemas())
    value = draw(st.one_of(valid_for(schema), JSON))
    if isinstance(value, dict) and draw(st.booleans()):  # perturb a member, or add one
        keys = st.sampled_from(sorted(value)) if value else st.nothing()
        key = draw(keys | st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=6))
        value = {**value, key: draw(JSON)}
    return schema, value


def reference(value: Any, schema: Any) -> bool:
    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


@settings(max_examples=300)
@given(schema_and_value())
def test_agrees_with_jsonschema_on_generated_schemas(pair: tuple[dict[str, Any], Any]) -> None:
    schema, value = pair
    assert unsupported_keywords(schema) == []
    assert (check_instance(value, schema) is None) == reference(value, schema)


DEFS = {"$defs": {"pos": {"type": "integer", "exclusiveMinimum": 0}}}

CASES: list[tuple[Any, Any]] = [
    ({"type": "integer"}, 1.0),
    ({"type": "integer"}, 1.5),
    ({"type": "integer"}, True),
    ({"type": "number"}, False),
    ({"type": "number"}, 3),
    ({"type": ["string", "null"]}, None),
    ({"type": ["string", "null"]}, 0),
    ({"const": 1}, 1.0),
    ({"const": 1}, True),
    ({"enum": [False, "a"]}, 0),
    ({"enum": [{"a": [1, 2]}]}, {"a": [1, 2]}),
    ({"pattern": "^[0-2][0-9]:[0-5][0-9]$"}, "18:30"),
    ({"pattern": "^[0-2][0-9]:[0-5][0-9]$"}, "6pm"),
    ({"pattern": "b"}, 5),  # only strings are checked against a pattern
    ({"multipleOf": 0.5}, 2.5),
    ({"multipleOf": 0.5}, 2.3),
    ({"exclusiveMaximum": 3}, 3),
    ({"minLength": 2}, "é"),
    ({"uniqueItems": True}, [1, 1.0]),
    ({"uniqueItems": True}, [1, True]),
    ({"anyOf": [{"type": "string"}, {"minimum": 3}]}, 2),
    ({"anyOf": [{"type": "string"}, {"minimum": 3}]}, 4),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 2),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 2.5),
    ({"allOf": [{"minimum": 1}, {"maximum": 2}]}, 3),
    ({"not": {"type": "null"}}, None),
    ({**DEFS, "properties": {"n": {"$ref": "#/$defs/pos"}}}, {"n": 0}),
    ({**DEFS, "properties": {"n": {"$ref": "#/$defs/pos"}}}, {"n": 2}),
    ({"additionalProperties": {"type": "string"}}, {"a": "x", "b": 1}),
    ({"items": {"type": "integer"}, "maxItems": 2}, [1, 2, 3]),
    ({"required": ["a"]}, [1]),  # `required` applies to objects only
    ({"properties": {"a": False}}, {"a": 1}),
    ({"properties": {"a": {}}, "additionalProperties": False}, {"a": 1, "b": 2}),
    ({"title": "t", "description": "d", "format": "email"}, "not an email"),
]


@pytest.mark.parametrize(("schema", "value"), CASES)
def test_agrees_with_jsonschema_on_each_keyword(schema: Any, value: Any) -> None:
    assert unsupported_keywords(schema) == []
    reason = check_instance(value, schema)
    assert (reason is None) == reference(value, schema), reason


def test_a_failure_names_where_and_why() -> None:
    schema = {"properties": {"days": {"type": "array", "items": {"type": "integer"}}}}
    assert check_instance({"days": [1, "2"]}, schema) == "$.days[1]: expected integer, got string"


@pytest.mark.parametrize(
    ("schema", "found"),
    [
        ({"patternProperties": {}}, ["patternProperties"]),
        ({"properties": {"a": {"minProperties": 1}}}, ["properties.a.minProperties"]),
        ({"anyOf": [{"type": "string"}, {"if": {}}]}, ["anyOf[1].if"]),
        ({"type": "text"}, ["type"]),
        ({"$ref": "https://example.com/s.json"}, ["$ref"]),
        ({"pattern": "("}, ["pattern"]),
        ({"items": [{"type": "string"}]}, ["items"]),
        ({"properties": {"a": {"type": "string", "description": "x"}}}, []),
    ],
)
def test_unsupported_keywords_are_named_with_their_path(schema: Any, found: list[str]) -> None:
    assert unsupported_keywords(schema) == found
