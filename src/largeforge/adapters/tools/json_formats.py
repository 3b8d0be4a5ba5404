"""Tool-call formats whose calls are JSON objects: hermes (Qwen2.5, Hermes, the fallback
prompt), Llama 3 JSON and Mistral.

Each grammar has one tag per callable tool whose `begin` fixes the name and whose content is
the tool's parameters schema; the tag's `end` closes the call. Under `auto` the tags are
*triggered* inside free text; under `required` or a named function the answer is only calls
(at least one). Without parallel calls, at most one call (`stop_after_first`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from largeforge.adapters.tools.scanning import (
    CallSyntax,
    Lit,
    OneOf,
    Opt,
    StreamingToolCallParser,
    Ws,
    json_header,
)
from largeforge.adapters.tools.structural import (
    Format,
    callable_tools,
    const,
    json_arguments,
    sequence,
    structural_tag,
    tag,
    triggered,
    with_separator,
)
from largeforge.application.ports import ToolCallParser
from largeforge.domain.tool_prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from largeforge.domain.tool_prompt import call_text as hermes_call_text
from largeforge.domain.tools import Constraint, ToolCall, ToolChoice, ToolChoiceMode, ToolSpec

Call = tuple[str, str]
"""A call as `calls_text` takes it: the function's name and its arguments as JSON text."""


def _arguments(arguments: str) -> str:
    return arguments.strip() or "{}"


def _name(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


class _JsonCallFormat:
    """What the JSON formats share: one tag per callable tool (`begin(name)`, the parameters'
    schema, `end`), the streaming parser of their `syntax`, and writing calls as text."""

    name: str
    trigger: str
    separator: str
    end: str
    syntax: CallSyntax
    single_call = False  # one call per answer whatever `parallel_tool_calls` says

    def begin(self, name: str) -> str:
        raise NotImplementedError

    def tags(self, tools: Sequence[ToolSpec], choice: ToolChoice) -> list[Format]:
        """One tag per tool a call may name under `choice`."""
        return [
            tag(self.begin(tool.name), json_arguments(tool.parameters), self.end)
            for tool in callable_tools(tools, choice)
        ]

    def constraint(
        self, tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool
    ) -> Constraint:
        parallel = parallel and not self.single_call
        return structural_tag(
            _calls(self.trigger, self.tags(tools, choice), self.separator, choice, parallel)
        )

    def parser(self) -> ToolCallParser:
        return StreamingToolCallParser(self.syntax)

    def call_text(self, name: str, arguments: str) -> str:
        """One call as this format writes it."""
        return self.calls_text([(name, arguments)])

    def calls_text(self, calls: Sequence[Call]) -> str:
        """An answer's calls as this format writes them (what the grammar makes a model write)."""
        return self.separator.join(
            f"{self.begin(name)}{_arguments(arguments)}{self.end}" for name, arguments in calls
        )


class HermesToolCallFormat(_JsonCallFormat):
    """`<tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>`, calls one per line.

    The convention of Qwen2.5 and Hermes models, and the one the fallback tool prompt teaches
    (`largeforge.domain.tool_prompt`), whose `call_text` writes the calls here too.

    Grammar: `auto` = triggered_tags(trigger `<tool_call>`); `required`/named =
    tags_with_separator(separator "\\n", at_least_one). Each tag: begin
    `<tool_call>\\n{"name": "NAME", "arguments": `, content the parameters' schema, end
    `}\\n</tool_call>`.
    """

    name = "hermes"
    trigger = TOOL_CALL_OPEN
    separator = "\n"
    syntax = CallSyntax(
        opener=(Lit(TOOL_CALL_OPEN), Ws(), *json_header(["arguments"])),
        tail=(Ws(), Lit("}"), Ws(), Lit(TOOL_CALL_CLOSE)),
    )

    def begin(self, name: str) -> str:
        return f'{TOOL_CALL_OPEN}\n{{"name": {_name(name)}, "arguments": '

    end = "}\n" + TOOL_CALL_CLOSE

    def calls_text(self, calls: Sequence[Call]) -> str:
        """An answer's calls as this format writes them (what the grammar makes a model write)."""
        return self.separator.join(
            hermes_call_text(ToolCall(id="", name=name, arguments=arguments))
            for name, arguments in calls
        )


class Llama3JsonToolCallFormat(_JsonCallFormat):
    """`{"name": NAME, "parameters": {...}}`, optionally after `<|python_tag|>`, calls
    separated by `; ` (Llama 3.1/3.2 JSON tool calling).

    The parser also takes `"arguments"` for `"parameters"`. `<|python_tag|>` is a special token:
    the grammar does not write it (a grammar cannot reach special tokens); the parser drops it.

    Grammar: `auto` = triggered_tags(trigger `{"name": `); `required`/named =
    tags_with_separator(separator "; ", at_least_one). Each tag: begin
    `{"name": "NAME", "parameters": `, content the parameters' schema, end `}`. One call per
    answer whatever `parallel_tool_calls` says: Llama 3.1/3.2 templates refuse an assistant turn
    with several calls, so the next request would fail.
    """

    name = "llama3_json"
    python_tag = "<|python_tag|>"
    trigger = '{"name": '
    separator = "; "
    end = "}"
    single_call = True
    syntax = CallSyntax(
        opener=(Opt(python_tag, blanks=True), *json_header(["parameters", "arguments"])),
        tail=(Ws(), Lit("}")),
        gap=";",
    )

    def begin(self, name: str) -> str:
        return f'{{"name": {_name(name)}, "parameters": '


class MistralToolCallFormat(_JsonCallFormat):
    """`[TOOL_CALLS][{"name": NAME, "arguments": {...}}, ...]` (Mistral 7B v0.3, Nemo, Small).

    `[TOOL_CALLS]` is a control token in Mistral's tokenizers: the engine must decode it into
    the text (vLLM: `skip_special_tokens=False`), and the grammar names it as text, so where
    xgrammar counts that token as special the model has to spell it with ordinary tokens.
    Newer tokenizers (`[TOOL_CALLS]name[ARGS]{...}`) are not this format.

    Grammar: `auto` = triggered_tags(trigger `[TOOL_CALLS]`, one tag begin `[TOOL_CALLS][`,
    content = the calls, end `]`); `required`/named = sequence(`[TOOL_CALLS][`, the calls, `]`);
    the calls = tags_with_separator(separator ", ", at_least_one), each tag begin
    `{"name": "NAME", "arguments": `, content the parameters' schema, end `}`.
    """

    name = "mistral"
    trigger = "[TOOL_CALLS]"
    separator = ", "
    end = "}"
    syntax = CallSyntax(
        opener=(Lit(trigger), Ws(), Lit("["), Ws(), *json_header(["arguments"])),
        tail=(Ws(), Lit("}"), Ws(), OneOf(("]", ","))),
        more=",",
        next_header=(Ws(), *json_header(["arguments"])),
    )

    def begin(self, name: str) -> str:
        return f'{{"name": {_name(name)}, "arguments": '

    def constraint(
        self, tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool
    ) -> Constraint:
        calls = with_separator(
            self.tags(tools, choice),
            self.separator,
            at_least_one=True,
            stop_after_first=not parallel,
        )
        opening = self.trigger + "["
        if choice.calls:
            return structural_tag(sequence(const(opening), calls, const("]")))
        block = tag(opening, calls, "]")
        return structural_tag(
            triggered([self.trigger], [block], at_least_one=False, stop_after_first=not parallel)
        )

    def calls_text(self, calls: Sequence[Call]) -> str:
        """An answer's calls as this format writes them (what the grammar makes a model write)."""
        body = self.separator.join(
            f"{self.begin(name)}{_arguments(arguments)}{self.end}" for name, arguments in calls
        )
        return f"{self.trigger}[{body}]"


def _calls(
    trigger: str, tags: list[Format], separator: str, choice: ToolChoice, parallel: bool
) -> Format:
    """Triggered calls in free text (`auto`), or only calls (`required`, a named function)."""
    if choice.mode is ToolChoiceMode.AUTO:
        return triggered([trigger], tags, at_least_one=False, stop_after_first=not parallel)
    return with_separator(tags, separator, at_least_one=True, stop_after_first=not parallel)
