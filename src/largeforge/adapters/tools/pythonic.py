"""The pythonic tool-call format: `[get_weather(city="Paris", days=3), other()]`.

Llama 3.2/4 and other models trained on "pythonic" calls write a Python list of calls with
keyword arguments whose values are Python literals (`True`, `False`, `None` are JSON's `true`,
`false`, `null`; tuples are lists).
"""

from __future__ import annotations

import ast
import json
import keyword
import math
from collections.abc import Mapping, Sequence
from typing import Any

from largeforge.adapters.grammar.ebnf import ebnf_literal
from largeforge.adapters.tools.scanning import (
    CallSyntax,
    Ident,
    Lit,
    StreamingToolCallParser,
    Ws,
)
from largeforge.adapters.tools.structural import (
    Format,
    any_of,
    callable_tools,
    const,
    grammar,
    sequence,
    star,
    structural_tag,
    tag,
    triggered,
    with_separator,
)
from largeforge.application.ports import ToolCallParser
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tools import Constraint, ToolChoice, ToolSpec

Call = tuple[str, str]

MAX_ITEM_DEPTH = 8
"""Nesting of array `items` schemas followed into the grammar; deeper values are any literal."""

GENERIC_RULES = r"""value ::= string | number | "True" | "False" | "None" | list | dict
list ::= "[" (value ("," " "? value)*)? "]"
dict ::= "{" (string ":" " "? value ("," " "? string ":" " "? value)*)? "}"
string ::= "\"" ([^"\\\r\n] | "\\" [^\r\n])* "\"" | "'" ([^'\\\r\n] | "\\" [^\r\n])* "'"
integer ::= "-"? ("0" | [1-9] [0-9]*)
number ::= integer ("." [0-9]+)? ([eE] [+-]? [0-9]+)?
boolean ::= "True" | "False"
"""
"""Python literals as the grammar lets a model write them (one optional space after `,`/`:`)."""


class PythonicToolCallFormat:
    """`[NAME(key=value, ...), ...]`: keyword arguments only, values Python literals.

    Grammar: each tool is a tag `NAME(` kwargs `)`, the kwargs an EBNF grammar made from the
    tool's schema: only its properties, in their declared order, required ones present, with
    values typed as far as Python literals allow: `string`, `integer`, `number`, `boolean`,
    `null`, `enum`/`const`, `array` with `items`. Nested objects, `anyOf`/`$ref`, string
    `pattern`/`format`/lengths and numeric bounds are NOT schema-constrained: such a value is
    any literal. Properties that cannot be keywords (not identifiers, or Python keywords) are
    left out; a required one makes the tool unusable here (`InvalidRequestError`).

    `auto` = triggered_tags: one trigger per tool, `[NAME(` (so text may hold other lists and
    brackets), the tag's content the first call's kwargs, `)`, then with parallel calls any
    number of `, NAME(...)`, end `]`. `required`/named = sequence(`[`,
    tags_with_separator(separator ", ", at_least_one), `]`).

    The parser reads a whole list before it says anything (its calls come out when the `]`
    arrives, names and arguments at once) and checks it with `ast`: a list that is not only
    calls of plain names with literal keyword arguments (JSON values) is content, as written.
    It cannot see the tools: under `auto`, text such as `[other(x=1)]` naming no tool is
    allowed by the grammar and parsed as a call, so names are checked by the caller.
    """

    name = "pythonic"
    separator = ", "
    syntax = CallSyntax(
        opener=(Lit("["), Ws(), Ident(), Ws(), Lit("(")),
        block=lambda: PythonListScanner(),
    )

    def constraint(
        self, tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool
    ) -> Constraint:
        chosen = callable_tools(tools, choice)
        for tool in chosen:
            if not tool.name.isidentifier() or keyword.iskeyword(tool.name):
                raise InvalidRequestError(
                    f"the pythonic tool-call format needs function names that are Python "
                    f"identifiers: '{tool.name}'",
                    param="tools",
                )
        kwargs = {tool.name: grammar(kwargs_grammar(tool)) for tool in chosen}
        calls = [tag(f"{name}(", content, ")") for name, content in kwargs.items()]
        if choice.calls:
            body = with_separator(
                calls, self.separator, at_least_one=True, stop_after_first=not parallel
            )
            return structural_tag(sequence(const("["), body, const("]")))
        more: list[Format] = [star(sequence(const(self.separator), any_of(calls)))]
        blocks = [
            tag(f"[{name}(", sequence(content, const(")"), *(more if parallel else [])), "]")
            for name, content in kwargs.items()
        ]
        return structural_tag(
            triggered(
                [f"[{name}(" for name in kwargs],
                blocks,
                at_least_one=False,
                stop_after_first=not parallel,
            )
        )

    def parser(self) -> ToolCallParser:
        return StreamingToolCallParser(self.syntax)

    def call_text(self, name: str, arguments: str) -> str:
        """One call as this format writes it."""
        return self.calls_text([(name, arguments)])

    def calls_text(self, calls: Sequence[Call]) -> str:
        """The calls as a Python list; `ValueError` when arguments are not a JSON object whose
        keys can be keywords."""
        return "[" + self.separator.join(_call(name, args) for name, args in calls) + "]"


def _call(name: str, arguments: str) -> str:
    value = json.loads(arguments.strip() or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"pythonic calls take keyword arguments, not {arguments!r}")
    for key in value:
        if not key.isidentifier() or keyword.iskeyword(key):
            raise ValueError(f"'{key}' cannot be a keyword argument")
    return f"{name}(" + ", ".join(f"{k}={python_literal(v)}" for k, v in value.items()) + ")"


def python_literal(value: Any) -> str:
    """A JSON value as a Python literal (`ast.literal_eval` gives it back)."""
    if value is None:
        return "None"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a Python string literal
    if isinstance(value, list | tuple):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{python_literal(str(k))}: {python_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


# ---------- Reading calls ----------

_CODE, _QUOTE1, _QUOTE2, _STRING, _TRIPLE, _ESCAPE, _COMMENT = range(7)


class PythonListScanner:
    """Finds the `]` that closes a list opened by `[NAME(`, skipping strings (single, triple,
    escapes) and comments, as Python's tokenizer would."""

    def __init__(self) -> None:
        self._depth = 2  # the opener read `[` and `(`
        self._state = _CODE
        self._quote = ""
        self._run = 0  # closing quotes seen in a row, inside a triple-quoted string
        self._triple = False

    def feed(self, text: str, start: int) -> int:
        i = start
        while i < len(text):
            char = text[i]
            i += 1
            state = self._state
            if state == _CODE:
                if char in "'\"":
                    self._quote, self._state = char, _QUOTE1
                elif char == "#":
                    self._state = _COMMENT
                elif char in "([{":
                    self._depth += 1
                elif char in ")]}":
                    self._depth -= 1
                    if self._depth == 0:
                        return i
            elif state == _QUOTE1:  # one quote: a string starts
                if char == self._quote:
                    self._state = _QUOTE2
                elif char == "\n":
                    self._state = _CODE  # an unterminated string: `ast` refuses the list
                else:
                    self._triple = False
                    self._state = _ESCAPE if char == "\\" else _STRING
            elif state == _QUOTE2:  # two quotes: an empty string, or a triple-quoted one
                if char == self._quote:
                    self._triple, self._run, self._state = True, 0, _TRIPLE
                else:
                    self._state = _CODE
                    i -= 1  # read this character again as code
            elif state == _STRING:
                if char == "\\":
                    self._state = _ESCAPE
                elif char == self._quote or char == "\n":
                    self._state = _CODE
            elif state == _TRIPLE:
                if char == "\\":
                    self._state = _ESCAPE
                elif char == self._quote:
                    self._run += 1
                    if self._run == 3:
                        self._state = _CODE
                else:
                    self._run = 0
            elif state == _ESCAPE:
                self._run = 0
                self._state = _TRIPLE if self._triple else _STRING
            elif char == "\n":  # comment
                self._state = _CODE
        return -1

    def calls(self, text: str) -> list[tuple[str, str]] | None:
        return parse_calls(text)


class _NotJsonError(ValueError):
    pass


def parse_calls(text: str) -> list[tuple[str, str]] | None:
    """The calls of a pythonic list (name, arguments as JSON), None when `text` is not one."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return None
    calls = []
    for element in tree.body.elts:
        if not isinstance(element, ast.Call) or not isinstance(element.func, ast.Name):
            return None
        if element.args:
            return None
        arguments: dict[str, Any] = {}
        for argument in element.keywords:
            if argument.arg is None:  # **kwargs
                return None
            try:
                arguments[argument.arg] = _json_value(ast.literal_eval(argument.value))
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                return None
        calls.append((element.func.id, json.dumps(arguments, ensure_ascii=False)))
    return calls


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJsonError("not a JSON number")
        return value
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise _NotJsonError("JSON keys are strings")
        return {key: _json_value(item) for key, item in value.items()}
    raise _NotJsonError(f"{type(value).__name__} is not a JSON value")


# ---------- The kwargs grammar ----------


def kwargs_grammar(tool: ToolSpec) -> str:
    """An EBNF grammar (root `root`) of a call's keyword arguments, from the tool's schema."""
    parameters = tool.parameters
    properties = parameters.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    required = [name for name in parameters.get("required") or () if isinstance(name, str)]
    names = list(dict.fromkeys([*properties, *required]))
    for name in required:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise InvalidRequestError(
                f"the pythonic tool-call format cannot write the required parameter '{name}' "
                f"of '{tool.name}' as a keyword argument",
                param="tools",
            )
    names = [name for name in names if name.isidentifier() and not keyword.iskeyword(name)]
    rules: list[str] = []
    values = [_value(properties.get(name, {}), rules, 0) for name in names]
    n = len(names)
    rules.append("root ::= first0")
    for i in range(n + 1):
        if i == n:
            rules.append(f'first{i} ::= ""')
            rules.append(f'rest{i} ::= ""')
            continue
        pair = f"{ebnf_literal(names[i] + '=')} {values[i]}"
        after = f"rest{i + 1}"
        if names[i] in required:
            rules.append(f"first{i} ::= {pair} {after}")
            rules.append(f'rest{i} ::= "," " "? {pair} {after}')
        else:
            rules.append(f"first{i} ::= {pair} {after} | first{i + 1}")
            rules.append(f'rest{i} ::= "," " "? {pair} {after} | rest{i + 1}')
    return "\n".join(rules) + "\n" + GENERIC_RULES


def _value(schema: Any, rules: list[str], depth: int) -> str:
    """An EBNF expression of a Python literal that fits `schema` (as far as it can tell)."""
    if not isinstance(schema, Mapping):
        return "value"
    if "const" in schema:
        return _python_value(schema["const"]) or "value"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        options = [_python_value(item) for item in enum]
        if all(options):
            return "(" + " | ".join(dict.fromkeys(o for o in options if o)) + ")"
        return "value"
    kind = schema.get("type")
    if isinstance(kind, list) and kind:
        return "(" + " | ".join(_value({**schema, "type": k}, rules, depth) for k in kind) + ")"
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping) or depth >= MAX_ITEM_DEPTH:
            return "list"
        item = _value(items, rules, depth + 1)
        rule = f"items{len(rules)}"
        rules.append(f'{rule} ::= "[" ({item} ("," " "? {item})*)? "]"')
        return rule
    simple = {
        "string": "string",
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "null": '"None"',
        "object": "dict",
    }
    return simple.get(kind, "value") if isinstance(kind, str) else "value"


def _python_value(value: Any) -> str | None:
    try:
        return ebnf_literal(python_literal(value))
    except ValueError:
        return None
