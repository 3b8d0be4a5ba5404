"""JSON Schema keywords the grammar engine would not enforce are found, with where they are."""

from __future__ import annotations

from typing import Any

import pytest

from largeforge.adapters.grammar.schema_support import (
    structural_tag_feature,
    unsupported_feature,
)


def nested(leaf: dict[str, Any]) -> dict[str, Any]:
    """`leaf` deep in an object: under properties, array items and anyOf."""
    return {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"anyOf": [{"type": "null"}, leaf]}}},
    }


@pytest.mark.parametrize(
    ("leaf", "keyword"),
    [
        ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}, "length bound"),
        ({"type": "string", "format": "email", "minLength": 3}, "length bound"),
        ({"type": "string", "format": "color"}, "format 'color'"),
        ({"type": "integer", "multipleOf": 5}, "multipleOf"),
        ({"type": ["number", "null"], "multipleOf": 0.5}, "multipleOf"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "array", "contains": {"type": "integer"}}, "contains"),
        ({"type": "object", "propertyNames": {"pattern": "^x"}}, "propertyNames"),
        ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    ],
)
def test_unenforced_keywords_are_found_where_they_are(leaf: dict[str, Any], keyword: str) -> None:
    found = unsupported_feature(nested(leaf))
    assert found is not None
    assert keyword in found
    assert "'properties.a.items.anyOf.1'" in found
    assert unsupported_feature(leaf) is not None


@pytest.mark.parametrize(
    "leaf",
    [
        {"type": "string", "maxLength": 5, "minLength": 1},
        {"type": "string", "pattern": "^[a-z]+$"},
        {"type": "string", "format": "date-time"},
        {"type": "integer", "minimum": 0, "maximum": 9},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        {"type": "string", "enum": ["a", "b"]},
        {"allOf": [{"type": "string"}]},
    ],
)
def test_enforced_schemas_pass(leaf: dict[str, Any]) -> None:
    assert unsupported_feature(nested(leaf)) is None


def test_a_tool_parameters_in_a_structural_tag_are_checked() -> None:
    bad = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}}
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": ["<tool_call>"],
            "tags": [
                {"type": "tag", "begin": "<tool_call>", "end": "</tool_call>",
                 "content": {"type": "json_schema", "json_schema": {"type": "object"}}},
                {"type": "tag", "begin": "<tool_call>x", "end": "</tool_call>",
                 "content": {"type": "json_schema", "json_schema": bad}},
            ],
        },
    }  # fmt: skip
    found = structural_tag_feature(tag)
    assert found is not None
    assert "multipleOf" in found
    assert "tool's parameters" in found
    tag["format"]["tags"].pop()  # type: ignore[index]
    assert structural_tag_feature(tag) is None
