"""A small JSON Schema validator (stdlib only) for scoring answers and tool-call arguments.

It checks the keywords that tool parameters and answer schemas use: `type` (one or a list),
`enum`, `const`, `properties`, `required`, `additionalProperties` (a boolean or a schema),
`items`, `minItems`, `maxItems`, `uniqueItems`, `minimum`, `maximum`, `exclusiveMinimum`,
`exclusiveMaximum`, `multipleOf`, `minLength`, `maxLength`, `pattern` (`re.search`), `allOf`,
`anyOf`, `oneOf`, `not`, and `$ref` to `#/$defs/...` or `#/definitions/...`. Annotations
(`title`, `description`, `default`, `examples`, `format`, ...) are ignored, as validators do by
default. Any other keyword is *unsupported*: `unsupported_keywords` names it, so a file is
refused when it is read instead of a keyword silently passing everything.

Numbers follow JSON Schema: `1.0` is an integer, booleans are not numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "$comment", "$defs", "definitions", "title", "description",
        "default", "examples", "format", "deprecated", "readOnly", "writeOnly",
        "contentMediaType", "contentEncoding",
    }
)  # fmt: skip
"""Keywords that describe but do not constrain (`format` is an annotation by default)."""

CHECKED = frozenset(
    {
        "type", "enum", "const", "properties", "required", "additionalProperties", "items",
        "minItems", "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "allOf",
        "anyOf", "oneOf", "not", "$ref",
    }
)  # fmt: skip
"""Keywords `check_instance` enforces."""

TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def unsupported_keywords(schema: Any, path: str = "") -> list[str]:
    """Where `schema` uses a keyword `check_instance` does not enforce (`properties.x.foo`),
    or is not a schema at all; empty when it can be checked whole."""
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, Mapping):
        return [path or "(root)"]
    found: list[str] = []
    for key, value in schema.items():
        where = f"{path}.{key}" if path else key
        if key in ("properties", "$defs", "definitions"):
            if not isinstance(value, Mapping):
                found.append(where)
                continue
            for name, sub in value.items():
                found += unsupported_keywords(sub, f"{where}.{name}")
        elif key in ("items", "additionalProperties", "not"):
            found += unsupported_keywords(value, where)
        elif key in ("allOf", "anyOf", "oneOf"):
            if not isinstance(value, list) or not value:
                found.append(where)
                continue
            for i, sub in enumerate(value):
                found += unsupported_keywords(sub, f"{where}[{i}]")
        elif key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(n not in TYPES for n in names):
                found.append(where)
        elif key == "$ref":
            if not (isinstance(value, str) and _REF.match(value)):
                found.append(where)
        elif key == "pattern":
            if not _compiles(value):
                found.append(where)
        elif key not in CHECKED and key not in ANNOTATIONS:
            found.append(where)
    return found


_REF = re.compile(r"^#/(\$defs|definitions)/[^/]+$")


def _compiles(pattern: Any) -> bool:
    if not isinstance(pattern, str):
        return False
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def check_instance(value: Any, schema: Any) -> str | None:
    """Why `value` does not satisfy `schema` (one line naming the place), or None when it does.

    `schema` must be supported (see `unsupported_keywords`); unknown keywords are ignored here.
    """
    root = schema if isinstance(schema, Mapping) else {}
    return _check(value, schema, root, "$")


def _check(value: Any, schema: Any, root: Mapping[str, Any], where: str) -> str | None:
    if schema is True:
        return None
    if schema is False:
        return f"{where}: no value is allowed here"
    if not isinstance(schema, Mapping):
        return f"{where}: the schema is not an object"
    for check in _CHECKS:
        reason = check(value, schema, root, where)
        if reason is not None:
            return reason
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_of(value: Any) -> str:
    """The JSON type name of a decoded value (`integer` for whole numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _type(value: Any, schema: Mapping[str, Any], _r: Mapping[str, Any], where: str) -> str | None:
    if "type" not in schema:
        return None
    wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    actual = type_of(value)
    if actual in wanted or (actual == "integer" and "number" in wanted):
        return None
    return f"{where}: expected {' or '.join(map(str, wanted))}, got {actual}"


def _enum(value: Any, schema: Mapping[str, Any], _r: Mapping[str, Any], where: str) -> str | None:
    if "const" in schema and not json_equal(value, schema["const"]):
        return f"{where}: must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(json_equal(value, option) for option in schema["enum"]):
        return f"{where}: must be one of {json.dumps(schema['enum'])}"
    return None


def _object(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
) -> str | None:
    if not isinstance(value, Mapping):
        return None
    for name in schema.get("required", ()):
        if name not in value:
            return f"{where}: missing required property '{name}'"
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            sub = properties[name]
        elif extra is False:
            return f"{where}: property '{name}' is not allowed"
        else:
            sub = extra
        reason = _check(item, sub, root, f"{where}.{name}")
        if reason is not None:
            return reason
    return None


def _array(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
) -> str | None:
    if not isinstance(value, list | tuple):
        return None
    if "minItems" in schema and len(value) < schema["minItems"]:
        return f"{where}: fewer than {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{where}: more than {schema['maxItems']} items"
    if schema.get("uniqueItems"):
        for i, item in enumerate(value):
            if any(json_equal(item, other) for other in value[:i]):
                return f"{where}: items are not unique"
    if "items" in schema:
        for i, item in enumerate(value):
            reason = _check(item, schema["items"], root, f"{where}[{i}]")
            if reason is not None:
                return reason
    return None


def _number(value: Any, schema: Mapping[str, Any], _r: Mapping[str, Any], where: str) -> str | None:
    if not _is_number(value):
        return None
    if "minimum" in schema and value < schema["minimum"]:
        return f"{where}: below the minimum {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{where}: above the maximum {schema['maximum']}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{where}: not above {schema['exclusiveMinimum']}"
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return f"{where}: not below {schema['exclusiveMaximum']}"
    step = schema.get("multipleOf")
    if step:
        quotient = value / step
        if not (math.isfinite(quotient) and math.isclose(quotient, round(quotient))):
            return f"{where}: not a multiple of {step}"
    return None


def _string(value: Any, schema: Mapping[str, Any], _r: Mapping[str, Any], where: str) -> str | None:
    if not isinstance(value, str):
        return None
    if "minLength" in schema and len(value) < schema["minLength"]:
        return f"{where}: shorter than {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{where}: longer than {schema['maxLength']} characters"
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        return f"{where}: does not match the pattern {schema['pattern']!r}"
    return None


def _combined(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str
) -> str | None:
    for sub in schema.get("allOf", ()):
        reason = _check(value, sub, root, where)
        if reason is not None:
            return reason
    if "anyOf" in schema and all(_check(value, s, root, where) for s in schema["anyOf"]):
        return f"{where}: matches none of anyOf"
    if "oneOf" in schema:
        passing = sum(1 for s in schema["oneOf"] if _check(value, s, root, where) is None)
        if passing != 1:
            return f"{where}: matches {passing} of oneOf, not exactly one"
    if "not" in schema and _check(value, schema["not"], root, where) is None:
        return f"{where}: matches the schema under 'not'"
    if "$ref" in schema:
        _, section, name = str(schema["$ref"]).split("/", 2)
        target = root.get(section, {}).get(name)
        if target is None:
            return f"{where}: $ref {schema['$ref']} points nowhere"
        return _check(value, target, root, where)
    return None


_CHECKS = (_type, _enum, _object, _array, _number, _string, _combined)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of decoded JSON values: objects regardless of key order, arrays in order,
    numbers by value (`1 == 1.0`), booleans never equal to numbers."""
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | list | tuple) or isinstance(b, Mapping | list | tuple):
        return False
    return bool(a == b)
