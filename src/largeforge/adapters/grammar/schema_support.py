"""JSON Schema features xgrammar compiles but does not enforce, found before a request runs.

xgrammar ignores some keywords with a warning (a length bound beside a `pattern`, `multipleOf`,
`uniqueItems` ...), so an answer could violate the schema it was generated under. Such schemas
are refused instead (a 400 naming the keyword), as vLLM's xgrammar backend refuses them: every
answer that is returned validates. The same check runs for a JSON Schema answer and for each
tool's parameters inside a structural tag, on both engines.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

STRING_FORMATS = frozenset(
    {
        "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid",
        "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
    }
)  # fmt: skip
"""String formats xgrammar enforces."""


def unsupported_feature(schema: Any, where: str = "") -> str | None:
    """The first keyword of `schema` (or its subschemas) xgrammar would not enforce, said in
    words with its location; None when it enforces everything."""
    for path, node in _subschemas(schema, ""):
        problem = _problem(node)
        if problem is not None:
            place = f"'{path}'" if path else "the top level"
            within = f" of {where}" if where else ""
            return f"{problem} at {place}{within} is not enforced by the grammar engine"
    return None


def structural_tag_feature(tag: Any) -> str | None:
    """`unsupported_feature` of every `json_schema` element of a structural tag."""
    for node in _dicts(tag):
        if node.get("type") == "json_schema" and "json_schema" in node:
            problem = unsupported_feature(node["json_schema"], "a tool's parameters")
            if problem is not None:
                return problem
    return None


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    return {k for k in kind if isinstance(k, str)} if isinstance(kind, list) else set()


def _problem(node: dict[str, Any]) -> str | None:
    types = _types(node)
    if types & {"integer", "number"} and "multipleOf" in node:
        return "'multipleOf'"
    if "array" in types:
        for key in ("uniqueItems", "contains", "minContains", "maxContains"):
            if key in node:
                return f"'{key}'"
    if "string" in types or not types:
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt not in STRING_FORMATS and "string" in types:
            return f"the string format '{fmt}'"
        if ("pattern" in node or "format" in node) and ("minLength" in node or "maxLength" in node):
            return "a length bound beside 'pattern' or 'format'"
    if "propertyNames" in node:
        return "'propertyNames'"
    pattern_properties = node.get("patternProperties")
    if isinstance(pattern_properties, dict) and (
        "properties" in node or len(pattern_properties) > 1
    ):
        return "'patternProperties' beside 'properties' (or several of them)"
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) > 1:
        return "'allOf' with several branches"
    return None


def _subschemas(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    path = f"{path}." if path else ""
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(
            value, dict
        ):
            for name, sub in value.items():
                yield from _subschemas(sub, f"{path}{key}.{name}")
        elif key in ("items", "additionalProperties", "not", "contains", "propertyNames"):
            yield from _subschemas(value, f"{path}{key}")
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            for number, sub in enumerate(value):
                yield from _subschemas(sub, f"{path}{key}.{number}")


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)
