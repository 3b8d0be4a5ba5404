"""The tool and structured-output parts of a chat request body, and their domain values.

OpenAI's `tools`, `tool_choice`, `parallel_tool_calls` and `response_format` (`text`,
`json_object`, `json_schema`), messages that carry `tool_calls` or answer one (`tool`), and
vLLM's `structured_outputs` extension (`json`, `regex`, `choice`, `grammar`, `json_object`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tools import (
    EMPTY_PARAMETERS,
    ResponseFormat,
    ResponseFormatKind,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolSpec,
)

FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
"""OpenAI's rule for function names (also the names of json_schema formats)."""

JsonObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]
ObjectSchema = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "properties": {"type": {"const": "object"}},
            "not": {"anyOf": [{"required": ["anyOf"]}, {"required": ["oneOf"]}]},
            "description": "a JSON Schema whose instances are objects",
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FunctionDefinition(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: ObjectSchema | None = Field(
        None, description="a JSON Schema of the arguments (an object); none: no arguments"
    )
    strict: StrictBool | None = None


class ToolIn(_Strict):
    """`{"type": "function", "function": {...}}`."""

    type: Literal["function"]
    function: FunctionDefinition

    def to_domain(self, index: int = 0) -> ToolSpec:
        function = self.function
        parameters = function.parameters if function.parameters is not None else EMPTY_PARAMETERS
        if parameters.get("type", "object") != "object" or {"anyOf", "oneOf"} & parameters.keys():
            raise InvalidRequestError(
                "a function's parameters must be a JSON Schema of an object (type 'object')",
                param=f"tools.{index}.function.parameters",
            )
        return ToolSpec(
            function.name, function.description or "", dict(parameters), bool(function.strict)
        )


class FunctionName(_Strict):
    name: str = Field(min_length=1)


class NamedToolChoice(_Strict):
    """`{"type": "function", "function": {"name": ...}}`: call this function."""

    type: Literal["function"]
    function: FunctionName


ToolChoiceIn = Literal["none", "auto", "required"] | NamedToolChoice


def tool_choice(value: ToolChoiceIn | None, has_tools: bool) -> ToolChoice:
    """OpenAI's default: `auto` with tools, `none` without."""
    if value is None:
        return ToolChoice(ToolChoiceMode.AUTO if has_tools else ToolChoiceMode.NONE)
    if isinstance(value, NamedToolChoice):
        return ToolChoice(ToolChoiceMode.FUNCTION, value.function.name)
    return ToolChoice(ToolChoiceMode(value))


class FunctionCallIn(_Strict):
    name: str = Field(min_length=1)
    arguments: str = Field(description="the arguments as JSON text")


class ToolCallIn(BaseModel):
    """An earlier call of the assistant, sent back in the conversation."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn

    def to_domain(self) -> ToolCall:
        return ToolCall(self.id, self.function.name, self.function.arguments)


class JsonSchemaFormat(_Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: JsonObject | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormatIn = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class StructuredOutputs(_Strict):
    """vLLM's extension: exactly one of `json`, `regex`, `choice`, `grammar`, `json_object`."""

    model_config = ConfigDict(
        json_schema_extra={"minProperties": 1, "maxProperties": 1}, populate_by_name=True
    )

    json_: Annotated[
        dict[str, Any] | str | None,
        WithJsonSchema({"anyOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}]}),
    ] = Field(None, alias="json", description="a JSON Schema (object or JSON text)")
    regex: str | None = Field(None, min_length=1)
    choice: list[str] | None = Field(None, min_length=1)
    grammar: str | None = Field(None, min_length=1, description="an EBNF grammar, root rule `root`")
    json_object: StrictBool | None = None

    def to_domain(self) -> ResponseFormat:
        given = [
            name
            for name in ("json", "regex", "choice", "grammar", "json_object")
            if getattr(self, "json_" if name == "json" else name) not in (None, False)
        ]
        if len(given) != 1:
            raise InvalidRequestError(
                "structured_outputs takes exactly one of json, regex, choice, grammar, "
                f"json_object (got {', '.join(given) or 'none'})",
                param="structured_outputs",
            )
        if self.json_ is not None:
            schema = self.json_
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except ValueError:
                    raise InvalidRequestError(
                        "structured_outputs.json is not valid JSON", param="structured_outputs"
                    ) from None
                if not isinstance(schema, dict):
                    raise InvalidRequestError(
                        "structured_outputs.json must be a JSON Schema object",
                        param="structured_outputs",
                    )
            return ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema=schema, name="json")
        if self.regex is not None:
            return ResponseFormat(ResponseFormatKind.REGEX, pattern=self.regex)
        if self.choice is not None:
            return ResponseFormat(ResponseFormatKind.CHOICE, choices=tuple(self.choice))
        if self.grammar is not None:
            return ResponseFormat(ResponseFormatKind.GRAMMAR, grammar=self.grammar)
        return ResponseFormat(ResponseFormatKind.JSON_OBJECT)


def response_format(
    value: TextFormat | JsonObjectFormat | JsonSchemaResponseFormat | None,
    structured: StructuredOutputs | None,
) -> ResponseFormat:
    """The answer's shape from `response_format` or vLLM's `structured_outputs` (not both)."""
    if structured is not None:
        if value is not None and not isinstance(value, TextFormat):
            raise InvalidRequestError(
                "give response_format or structured_outputs, not both", param="structured_outputs"
            )
        return structured.to_domain()
    if value is None or isinstance(value, TextFormat):
        return ResponseFormat()
    if isinstance(value, JsonObjectFormat):
        return ResponseFormat(ResponseFormatKind.JSON_OBJECT)
    spec = value.json_schema
    schema = spec.schema_ if spec.schema_ is not None else {"type": "object"}
    return ResponseFormat(
        ResponseFormatKind.JSON_SCHEMA, schema=schema, name=spec.name, strict=bool(spec.strict)
    )
