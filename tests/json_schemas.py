"""Hypothesis strategies for the JSON Schemas clients send as `json_schema` or tool parameters.

Nested objects (required and optional keys, `additionalProperties: false`), arrays with
bounds, enums, integers with bounds, strings with `maxLength`, booleans. Every schema bounds
the size of what matches it, so a constrained answer always fits its token budget.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
Schema = dict[str, Any]


def _integer() -> st.SearchStrategy[Schema]:
    @st.composite
    def build(draw: st.DrawFn) -> Schema:
        low = draw(st.integers(-1000, 1000))
        high = draw(st.integers(low, low + 1000))
        schema: Schema = {"type": "integer", "minimum": low, "maximum": high}
        return schema

    return build()


def _string() -> st.SearchStrategy[Schema]:
    return st.builds(
        lambda top: {"type": "string", "maxLength": top}, st.integers(min_value=1, max_value=24)
    )


def _enum() -> st.SearchStrategy[Schema]:
    values = st.lists(st.text(alphabet="abcdefgh XYZ-", min_size=1, max_size=8), min_size=1,
                      max_size=4, unique=True)  # fmt: skip
    return st.builds(lambda v: {"type": "string", "enum": v}, values)


LEAVES = st.one_of(_integer(), _string(), _enum(), st.just({"type": "boolean"}))


def _array(items: st.SearchStrategy[Schema]) -> st.SearchStrategy[Schema]:
    @st.composite
    def build(draw: st.DrawFn) -> Schema:
        low = draw(st.integers(0, 2))
        high = draw(st.integers(max(low, 1), 3))
        return {"type": "array", "items": draw(items), "minItems": low, "maxItems": high}

    return build()


def _object(values: st.SearchStrategy[Schema]) -> st.SearchStrategy[Schema]:
    @st.composite
    def build(draw: st.DrawFn) -> Schema:
        names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
        properties = {name: draw(values) for name in names}
        required = [n for n in names if draw(st.booleans())]
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }

    return build()


def json_schemas(max_depth: int = 3) -> st.SearchStrategy[Schema]:
    """Object schemas nested up to `max_depth` levels (objects and arrays of anything)."""
    values: st.SearchStrategy[Schema] = LEAVES
    for _ in range(max_depth - 1):
        values = st.one_of(LEAVES, _object(values), _array(values))
    return _object(values)
