"""Builders of xgrammar structural tags (`{"type": "structural_tag", "format": {...}}`).

Only formats that xgrammar 0.2.8 (the vLLM environment) and 0.2.9 both read: `tag`,
`json_schema` (with `max_whitespace_cnt`), `triggered_tags`, `tags_with_separator`,
`sequence`, `or`, `star`, `const_string` and `grammar` (EBNF, no `syntax` key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tools import Constraint, ToolChoice, ToolChoiceMode, ToolSpec

MAX_BLANKS = 1
"""Consecutive whitespace allowed inside generated arguments (one space after `:` and `,`).

With any whitespace allowed, a small model sampling at temperature 1 can write blanks until its
token budget runs out (the JSON-Schema constraints of the xgrammar engine make the same choice).
"""

Format = dict[str, Any]


def structural_tag(fmt: Format) -> Constraint:
    return Constraint.structural_tag({"type": "structural_tag", "format": fmt})


def tag(begin: str, content: Format, end: str) -> Format:
    return {"type": "tag", "begin": begin, "content": content, "end": end}


def json_arguments(parameters: Mapping[str, Any]) -> Format:
    """The content of a call's arguments: its parameters' schema, always an object."""
    schema = dict(parameters)
    if "type" not in schema and not {"anyOf", "oneOf", "allOf", "$ref"} & schema.keys():
        schema["type"] = "object"
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": MAX_BLANKS}


def triggered(
    triggers: Sequence[str], tags: Sequence[Format], *, at_least_one: bool, stop_after_first: bool
) -> Format:
    """Free text in which each trigger starts one of `tags` (the tag must then be complete)."""
    return {
        "type": "triggered_tags",
        "triggers": list(triggers),
        "tags": list(tags),
        "at_least_one": at_least_one,
        "stop_after_first": stop_after_first,
    }


def with_separator(
    tags: Sequence[Format], separator: str, *, at_least_one: bool, stop_after_first: bool
) -> Format:
    """Only tags, `separator` between them, nothing else."""
    return {
        "type": "tags_with_separator",
        "tags": list(tags),
        "separator": separator,
        "at_least_one": at_least_one,
        "stop_after_first": stop_after_first,
    }


def const(text: str) -> Format:
    return {"type": "const_string", "value": text}


def sequence(*elements: Format) -> Format:
    return {"type": "sequence", "elements": list(elements)}


def any_of(elements: Sequence[Format]) -> Format:
    return elements[0] if len(elements) == 1 else {"type": "or", "elements": list(elements)}


def star(content: Format) -> Format:
    return {"type": "star", "content": content}


def grammar(ebnf: str) -> Format:
    return {"type": "grammar", "grammar": ebnf}


def callable_tools(tools: Sequence[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """The tools a call may name under `choice` (the named one, or all)."""
    if choice.mode is ToolChoiceMode.NONE:
        raise ValueError("tool_choice 'none' has no tool-call grammar: constrain nothing")
    if not tools:
        raise InvalidRequestError("a tool-call grammar needs tools", param="tools")
    if choice.mode is ToolChoiceMode.FUNCTION:
        named = [tool for tool in tools if tool.name == choice.name]
        if not named:
            raise InvalidRequestError(
                f"tool_choice names the function '{choice.name}', which is not among the tools",
                param="tool_choice",
            )
        return named
    return list(tools)
