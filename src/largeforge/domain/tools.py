"""Tools, tool calls and output constraints: what a chat request may ask of the model's shape.

One set of types for serving and (later) training data: an assistant `Message` carries
`ToolCall`s, a `tool` message answers one by `tool_call_id`. A `ToolSpec` is a function the
model may call (its parameters a JSON Schema); a `ToolChoice` says whether it must; a
`ResponseFormat` says what the text must be (JSON, a schema, a regex, one of some choices).

Engines enforce shapes through a `Constraint`: a grammar description every engine takes (a
JSON Schema, a regex, a choice list, an EBNF grammar, or a structural tag in xgrammar's JSON
format for tool calls). It is a hashable value, so compiled grammars are cached by it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from largeforge.domain.errors import InvalidRequestError

EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of a function by the model: `arguments` is JSON text, as the OpenAI API sends it."""

    id: str
    name: str
    arguments: str

    def arguments_value(self) -> Any:
        """The arguments decoded (the text itself when it is not JSON)."""
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments

    def as_dict(self) -> dict[str, Any]:
        """The chat-template shape (arguments as an object, as templates expect)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_value()},
        }


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: name, description and a JSON Schema of its parameters."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    strict: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI / chat-template shape: `{"type": "function", "function": {...}}`."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


class ToolChoiceMode(StrEnum):
    """OpenAI's `tool_choice`: no call, the model decides, at least one call, or one function."""

    NONE = "none"
    AUTO = "auto"
    REQUIRED = "required"
    FUNCTION = "function"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`mode`, and the function's `name` when the mode is `function`."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.mode is ToolChoiceMode.FUNCTION) != (self.name is not None):
            raise InvalidRequestError(
                "tool_choice names a function only with type 'function'", param="tool_choice"
            )

    @property
    def calls(self) -> bool:
        """Whether the model is forced to call (required or a named function)."""
        return self.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION)


class ResponseFormatKind(StrEnum):
    """What the answer's text must be. `regex`, `choice` and `grammar` are vLLM's extensions."""

    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"
    REGEX = "regex"
    CHOICE = "choice"
    GRAMMAR = "grammar"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """The shape of a text answer: a JSON object, a JSON Schema (with `strict`), a regex, one
    of `choices`, or an EBNF `grammar`; `text` constrains nothing."""

    kind: ResponseFormatKind = ResponseFormatKind.TEXT
    schema: Mapping[str, Any] | None = None
    name: str = ""
    strict: bool = False
    pattern: str = ""
    choices: tuple[str, ...] = ()
    grammar: str = ""

    def constraint(self) -> Constraint | None:
        """The grammar that enforces this format (None for text)."""
        kind = self.kind
        if kind is ResponseFormatKind.TEXT:
            return None
        if kind is ResponseFormatKind.JSON_OBJECT:
            return Constraint.json_schema({"type": "object"})
        if kind is ResponseFormatKind.JSON_SCHEMA:
            return Constraint.json_schema(self.schema if self.schema is not None else {})
        if kind is ResponseFormatKind.REGEX:
            return Constraint(ConstraintKind.REGEX, self.pattern)
        if kind is ResponseFormatKind.CHOICE:
            return Constraint(ConstraintKind.CHOICE, json.dumps(list(self.choices)))
        return Constraint(ConstraintKind.GRAMMAR, self.grammar)

    def structural_format(self) -> dict[str, Any] | None:
        """This format as an element of a structural tag (to combine it with tool calls)."""
        kind = self.kind
        if kind is ResponseFormatKind.TEXT:
            return None
        if kind in (ResponseFormatKind.JSON_OBJECT, ResponseFormatKind.JSON_SCHEMA):
            schema = {"type": "object"} if kind is ResponseFormatKind.JSON_OBJECT else self.schema
            # at most one blank in a row: a small model sampling must not loop on whitespace
            return {
                "type": "json_schema",
                "json_schema": dict(schema or {}),
                "max_whitespace_cnt": 1,
            }
        if kind is ResponseFormatKind.REGEX:
            return {"type": "regex", "pattern": self.pattern}
        if kind is ResponseFormatKind.CHOICE:
            options = [{"type": "const_string", "value": c} for c in self.choices]
            return {"type": "or", "elements": options} if len(options) > 1 else options[0]
        return {"type": "grammar", "grammar": self.grammar}


class ConstraintKind(StrEnum):
    """How a `Constraint`'s `spec` is written."""

    JSON_SCHEMA = "json_schema"  # a JSON Schema, as JSON text
    REGEX = "regex"  # a regular expression the whole output matches
    CHOICE = "choice"  # a JSON list of strings: the output is exactly one of them
    GRAMMAR = "grammar"  # an EBNF grammar (GBNF style, root rule `root`)
    STRUCTURAL_TAG = "structural_tag"  # xgrammar's structural tag JSON (tool calls)


@dataclass(frozen=True, slots=True)
class Constraint:
    """A grammar the generated text must match, ending in end-of-sequence once complete."""

    kind: ConstraintKind
    spec: str

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | bool) -> Constraint:
        return cls(ConstraintKind.JSON_SCHEMA, canonical_json(schema))

    @classmethod
    def structural_tag(cls, tag: Mapping[str, Any]) -> Constraint:
        return cls(ConstraintKind.STRUCTURAL_TAG, canonical_json(tag))

    def value(self) -> Any:
        """The spec decoded (JSON kinds) or as written (regex, grammar)."""
        if self.kind in (ConstraintKind.REGEX, ConstraintKind.GRAMMAR):
            return self.spec
        return json.loads(self.spec)


def canonical_json(value: Any) -> str:
    """JSON text that is the same for equal values (keys kept in their given order)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
