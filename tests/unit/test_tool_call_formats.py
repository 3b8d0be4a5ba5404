"""Tool-call formats: calls written with `calls_text` come back from the streaming parser in any
chunking, text that only looks like a call stays content, and each format's grammar (an
xgrammar structural tag) accepts the format's own calls and refuses wrong ones."""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from largeforge.adapters.tools import (
    TOOL_CALL_FORMATS,
    HermesToolCallFormat,
    Llama3JsonToolCallFormat,
    MistralToolCallFormat,
    PythonicToolCallFormat,
    format_for_template,
    tool_call_format,
)
from largeforge.application.ports import ReplyPiece, ToolCallFormat, ToolCallParser
from largeforge.domain.errors import ConfigError, InvalidRequestError
from largeforge.domain.generation import ToolCallDelta
from largeforge.domain.tools import Constraint, ToolChoice, ToolChoiceMode, ToolSpec

AnyFormat = HermesToolCallFormat | Llama3JsonToolCallFormat | MistralToolCallFormat
Format = AnyFormat | PythonicToolCallFormat
FORMATS: list[Format] = [
    HermesToolCallFormat(),
    Llama3JsonToolCallFormat(),
    MistralToolCallFormat(),
    PythonicToolCallFormat(),
]
JSON_FORMATS = FORMATS[:3]
BLANKS = " \t\n\r"

# ---------- Reading answers ----------


def collect(pieces: Sequence[ReplyPiece]) -> tuple[str, list[tuple[str, str]]]:
    """The content and the calls (name, joined arguments) of a parser's pieces, checking the
    pieces' shape: no empty ones, ids left None, a call's name first and once, then fragments."""
    content: list[str] = []
    calls: list[list[str]] = []
    for piece in pieces:
        if isinstance(piece, str):
            assert piece, "an empty content piece"
            content.append(piece)
            continue
        assert piece.id is None
        if piece.name is not None:
            assert piece.index == len(calls)
            assert piece.arguments == ""
            calls.append([piece.name, ""])
        else:
            assert calls, "arguments before a name"
            assert piece.index == len(calls) - 1
            assert piece.arguments, "an empty arguments fragment"
            calls[-1][1] += piece.arguments
    return "".join(content), [(name, arguments) for name, arguments in calls]


def parse(fmt: Format, text: str, cuts: Sequence[int] = ()) -> tuple[str, list[tuple[str, str]]]:
    """`text` fed to a new parser in pieces cut at `cuts`, then finished."""
    parser = fmt.parser()
    pieces: list[ReplyPiece] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        pieces += parser.feed(text[start:cut])
        start = cut
    pieces += parser.finish()
    return collect(pieces)


def comparable(fmt: Format, calls: Sequence[tuple[str, str]]) -> list[tuple[str, Any]]:
    """Calls as compared: JSON formats keep the arguments' text; pythonic ones its value."""
    if isinstance(fmt, PythonicToolCallFormat):
        return [(name, json.loads(arguments)) for name, arguments in calls]
    return list(calls)


# ---------- Strategies ----------

SNIPPETS = [
    '"',
    "\\",
    '\\"',
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    '{"name": ',
    '"}',
    "[get_weather(",
    ")]",
    "é",
    "😀",
    "\n",
]
"""Pieces of strings inside arguments: quotes, braces, escapes, the triggers themselves."""

tricky_text = st.lists(st.one_of(st.text(max_size=5), st.sampled_from(SNIPPETS)), max_size=4).map(
    "".join
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(tricky_text, children, max_size=3)
    ),
    max_leaves=10,
)

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name)
)


@st.composite
def calls(
    draw: st.DrawFn, fmt: Format, keys: st.SearchStrategy[str] = tricky_text
) -> tuple[str, str]:
    """One call: a name and its arguments as JSON text (keywords for pythonic)."""
    if isinstance(fmt, PythonicToolCallFormat):
        name = draw(identifiers)
        arguments = draw(st.dictionaries(identifiers, json_values, max_size=4))
    else:
        name = draw(st.one_of(identifiers, st.text(min_size=1, max_size=10)))
        arguments = draw(st.dictionaries(keys, json_values, max_size=4))
    return name, json.dumps(arguments, ensure_ascii=draw(st.booleans()))


DECOYS: dict[str, list[str]] = {
    "hermes": [
        "<",
        "<tool_",
        "<tool_call>",
        "<tool_call> x",
        "</tool_call>",
        '<tool_call>\n{"name": 1}',
        '<tool_call>\n{"name": "f", "arguments": []}',
        "<tools>",
    ],
    "llama3_json": [
        "<",
        "<|python_",
        "<|python_tag|>x",
        '{"name" x',
        '{"name": 1}',
        '{"name": "f"}',
        '{"name": "f", "parameters": 1}',
        '{"a": 1}',
        "{}",
    ],
    "mistral": [
        "[",
        "[TOOL_",
        "[TOOL_CALLS]",
        "[TOOL_CALLS] x",
        "[TOOL_CALLS][1]",
        '[TOOL_CALLS][{"name": 1}]',
        "[1, 2]",
    ],
    "pythonic": [
        "[",
        "[get_weather",
        "[get_weather x",
        "[1, 2]",
        "[f(1)]",
        "[f(x=y)]",
        "[f(**k)]",
        "[f(x={1, 2})]",
        "[m.f(x=1)]",
        '[get_weather(city="Paris") x]',
        "[f(x=1), 2]",
        "[]",
    ],
}
"""Text that starts like a call of the format but is not one (each dead by its last character,
whatever follows it)."""

plain_text = st.text(
    alphabet=st.characters(blacklist_characters="<>[](){}", blacklist_categories=["Cs"]),
    max_size=6,
)


def segments(fmt: Format) -> st.SearchStrategy[str]:
    """Text around calls: plain text, blanks, separators and decoys."""
    return st.lists(
        st.one_of(
            plain_text,
            st.sampled_from([" ", "\n", "\t", "\r\n", ";", "; "]),
            st.sampled_from(DECOYS[fmt.name]),
        ),
        max_size=4,
    ).map("".join)


def is_gap(fmt: Format, text: str, first: bool) -> bool:
    """Whether `text` is dropped before the first call (`first`), between or after calls."""
    if first or not isinstance(fmt, Llama3JsonToolCallFormat):
        return all(char in BLANKS for char in text)
    return re.fullmatch(r"[ \t\n\r]*(;[ \t\n\r]*)?", text) is not None


def expected_content(fmt: Format, texts: Sequence[str]) -> str:
    """The content of an answer that has `texts` around its blocks of calls."""
    if len(texts) == 1:
        return texts[0]
    return "".join(text for i, text in enumerate(texts) if not is_gap(fmt, text, i == 0))


def block_text(fmt: Format, block: Sequence[tuple[str, str]], python_tag: bool) -> str:
    text = fmt.calls_text(block)
    if python_tag and isinstance(fmt, Llama3JsonToolCallFormat):
        return fmt.python_tag + text
    return text


FORMAT_IDS = [fmt.name for fmt in FORMATS]


# ---------- Parsing ----------


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_calls_and_text_come_back_in_any_chunking(fmt: Format, data: st.DataObject) -> None:
    blocks = data.draw(st.lists(st.lists(calls(fmt), min_size=1, max_size=3), max_size=3))
    texts = [data.draw(segments(fmt)) for _ in range(len(blocks) + 1)]
    tags = [data.draw(st.booleans()) for _ in blocks]
    text = texts[0] + "".join(
        block_text(fmt, block, tag) + after
        for block, tag, after in zip(blocks, tags, texts[1:], strict=True)
    )
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=30))

    content, got = parse(fmt, text, cuts)

    assert content == expected_content(fmt, texts)
    assert comparable(fmt, got) == comparable(fmt, [call for block in blocks for call in block])
    if not isinstance(fmt, PythonicToolCallFormat):
        assert got == [call for block in blocks for call in block]  # the arguments' own text


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_text_parses_the_same_in_any_chunking(fmt: Format, data: st.DataObject) -> None:
    """Whatever the text (broken calls, nested triggers), chunking changes nothing."""
    pieces = st.one_of(
        st.text(max_size=4),
        st.sampled_from(SNIPPETS + DECOYS[fmt.name] + [" ", "; ", ", "]),
        calls(fmt).map(lambda call: fmt.call_text(*call)),
        calls(fmt).map(lambda call: fmt.call_text(*call)[: len(call[0]) + 20]),
    )
    text = "".join(data.draw(st.lists(pieces, max_size=8)))
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=30))

    assert parse(fmt, text, cuts) == parse(fmt, text)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_what_only_looks_like_a_call_is_content(fmt: Format, data: st.DataObject) -> None:
    decoys = data.draw(st.lists(st.sampled_from(DECOYS[fmt.name]), min_size=1, max_size=4))
    text = "Hello " + " ".join(decoys)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))

    assert parse(fmt, text, cuts) == (text, [])


@pytest.mark.parametrize(
    ("fmt", "prefix"),
    [
        (FORMATS[0], "<tool_"),
        (FORMATS[0], "<tool_call>\n"),
        (FORMATS[0], '<tool_call>\n{"name": "get_weather", "argu'),
        (FORMATS[1], "<|python_ta"),
        (FORMATS[1], '{"name": "get_weather"'),
        (FORMATS[2], "[TOOL_CAL"),
        (FORMATS[2], "[TOOL_CALLS][{"),
        (FORMATS[3], "[get_wea"),
        (FORMATS[3], '[get_weather(city="Par'),
    ],
)
def test_a_trigger_cut_off_at_the_end_is_content(fmt: Format, prefix: str) -> None:
    """The end of the answer releases held text: an unfinished header announced nothing."""
    parser = fmt.parser()
    assert collect(parser.feed("It is " + prefix)) == ("It is ", [])
    assert collect(parser.finish()) == (prefix, [])


@pytest.mark.parametrize("fmt", JSON_FORMATS, ids=FORMAT_IDS[:3])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_arguments_stream_as_they_arrive(fmt: AnyFormat, data: st.DataObject) -> None:
    """Fed up to any point inside the arguments, the call already holds exactly the text up to
    there; at the arguments' closing brace it is complete, before the format's end tag; cut
    off there, finishing keeps it and raises nothing."""
    name, arguments = data.draw(calls(fmt))
    text = fmt.call_text(name, arguments)
    start = text.rindex(arguments)
    cut = data.draw(st.integers(start + 1, start + len(arguments)))
    cuts = data.draw(st.lists(st.integers(0, cut), max_size=10))

    parser = fmt.parser()
    pieces: list[ReplyPiece] = []
    begin = 0
    for point in [*sorted(set(cuts)), cut]:
        pieces += parser.feed(text[begin:point])
        begin = point

    assert collect(pieces) == ("", [(name, text[start:cut])])
    assert collect(pieces + parser.finish()) == ("", [(name, text[start:cut])])


def test_hermes_streams_name_then_fragments_and_holds_back_trigger_text() -> None:
    parser = HermesToolCallFormat().parser()

    assert parser.feed("Let me check.<tool_") == ["Let me check."]
    assert parser.feed('call>\n{"name": "get_weather", ') == []
    assert parser.feed('"arguments": {"city"') == [
        ToolCallDelta(index=0, name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city"'),
    ]
    assert parser.feed(': "Paris"}') == [ToolCallDelta(index=0, arguments=': "Paris"}')]
    assert parser.feed("}\n</tool_call>\n<tool_call>\n") == []
    assert parser.feed('{"name": "now", "arguments": {}}\n</tool_call>\n') == [
        ToolCallDelta(index=1, name="now"),
        ToolCallDelta(index=1, arguments="{}"),
    ]
    assert parser.finish() == []


def test_llama3_takes_the_python_tag_and_arguments_key() -> None:
    text = '<|python_tag|>{"name": "f", "arguments": {"a": 1}}; {"name": "g", "parameters": {}}'
    assert parse(Llama3JsonToolCallFormat(), text) == ("", [("f", '{"a": 1}'), ("g", "{}")])


def test_pythonic_values_are_python_literals() -> None:
    text = '[get_weather(city="Paris", days=3, metric=True, extra=None, at=(1, 2.5)), now()]'
    content, got = parse(PythonicToolCallFormat(), "Sure: " + text)

    assert content == "Sure: "
    assert [(name, json.loads(arguments)) for name, arguments in got] == [
        (
            "get_weather",
            {"city": "Paris", "days": 3, "metric": True, "extra": None, "at": [1, 2.5]},
        ),
        ("now", {}),
    ]


def test_pythonic_refuses_writing_arguments_that_are_not_keywords() -> None:
    fmt = PythonicToolCallFormat()
    with pytest.raises(ValueError, match="keyword"):
        fmt.call_text("f", '{"class": 1}')
    with pytest.raises(ValueError, match="keyword"):
        fmt.call_text("f", "[1]")


def test_text_between_and_after_calls() -> None:
    """Blanks around calls are dropped, other text is kept where it was."""
    fmt = HermesToolCallFormat()
    call = fmt.call_text("f", "{}")
    assert parse(fmt, f"\n {call}\n\n{call} \n") == ("", [("f", "{}"), ("f", "{}")])
    assert parse(fmt, f"A {call} B\n{call}C") == ("A  B\nC", [("f", "{}"), ("f", "{}")])
    assert parse(fmt, "  \n") == ("  \n", [])


# ---------- Registry ----------

QWEN_TEMPLATE = (
    "{%- if tools %}For each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags{%- endif %}"
)
MISTRAL_TEMPLATE = "{%- if message.tool_calls %}{{ '[TOOL_CALLS][' }}{%- endif %}"
LLAMA31_TEMPLATE = (
    '{{- \'Respond in the format {"name": function name, "parameters": dictionary of '
    "argument name and its value}.' }}{%- if builtin_tools %}<|python_tag|>{%- endif %}"
)
LLAMA31_NO_TAG = 'Respond in the format {"name": function name, "parameters": dictionary ...}'
PYTHONIC_TEMPLATE = (
    "you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]"
)
CHATML = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% endfor %}"


@pytest.mark.parametrize(
    ("template", "name"),
    [
        (QWEN_TEMPLATE, "hermes"),
        (MISTRAL_TEMPLATE, "mistral"),
        (LLAMA31_TEMPLATE, "llama3_json"),
        (LLAMA31_NO_TAG, "llama3_json"),
        ("{{ '<|python_tag|>' }}", "llama3_json"),
        (PYTHONIC_TEMPLATE, "pythonic"),
        (CHATML, "hermes"),
        (None, "hermes"),
    ],
)
def test_format_for_template(template: str | None, name: str) -> None:
    assert format_for_template(template) == name


def test_formats_by_name() -> None:
    for name in TOOL_CALL_FORMATS:
        fmt = tool_call_format(name)
        assert fmt.name == name
        assert isinstance(fmt, ToolCallFormat)
        assert isinstance(fmt.parser(), ToolCallParser)
    with pytest.raises(ConfigError, match="hermes, llama3_json, mistral, pythonic"):
        tool_call_format("gorilla")


# ---------- Grammars ----------

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
NOW = ToolSpec("now", "The time.")
TOOLS = (WEATHER, NOW)
AUTO = ToolChoice()
REQUIRED = ToolChoice(ToolChoiceMode.REQUIRED)
NAMED = ToolChoice(ToolChoiceMode.FUNCTION, "get_weather")
GOOD = ("get_weather", '{"city": "Paris", "days": 3, "unit": "celsius"}')


def accepts(constraint: Constraint, text: str) -> bool:
    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string

    return bool(_is_grammar_accept_string(xgr.Grammar.from_structural_tag(constraint.spec), text))


def test_grammar_shapes() -> None:
    hermes = HermesToolCallFormat().constraint(TOOLS, AUTO, parallel=True).value()
    assert hermes["type"] == "structural_tag"
    assert hermes["format"]["type"] == "triggered_tags"
    assert hermes["format"]["triggers"] == ["<tool_call>"]
    assert hermes["format"]["tags"][0]["begin"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": '
    )
    assert hermes["format"]["tags"][0]["end"] == "}\n</tool_call>"
    assert hermes["format"]["tags"][0]["content"]["json_schema"] == WEATHER.parameters
    required = HermesToolCallFormat().constraint(TOOLS, REQUIRED, parallel=False).value()
    assert required["format"]["type"] == "tags_with_separator"
    assert required["format"]["at_least_one"] is True
    assert required["format"]["stop_after_first"] is True
    named = Llama3JsonToolCallFormat().constraint(TOOLS, NAMED, parallel=True).value()
    assert [tag["begin"] for tag in named["format"]["tags"]] == [
        '{"name": "get_weather", "parameters": '
    ]


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_auto_grammar_allows_text_and_valid_calls_only(fmt: Format) -> None:
    grammar = fmt.constraint(TOOLS, AUTO, parallel=True)
    good = fmt.call_text(*GOOD)

    assert accepts(grammar, "Hello there, no tools needed.")
    assert accepts(grammar, "Let me check. " + good)
    assert accepts(grammar, fmt.call_text("now", "{}"))
    # Llama 3.1/3.2 templates take one call per assistant turn: so does its grammar
    single = isinstance(fmt, Llama3JsonToolCallFormat)
    assert accepts(grammar, fmt.calls_text([GOOD, ("now", "{}")])) is not single
    assert not accepts(grammar, fmt.call_text("get_weather", '{"city": 3}'))
    assert not accepts(grammar, fmt.call_text("get_weather", '{"days": 3}'))
    assert not accepts(grammar, fmt.call_text("get_weather", '{"city": "P", "unit": "K"}'))
    undeclared = fmt.call_text("get_time", '{"city": "Paris"}')
    # pythonic triggers are `[NAME(` per tool: a list naming another function is plain text
    assert accepts(grammar, undeclared) is isinstance(fmt, PythonicToolCallFormat)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_required_and_named_grammars_allow_only_calls(fmt: Format) -> None:
    good = fmt.call_text(*GOOD)
    now = fmt.call_text("now", "{}")
    both = fmt.calls_text([GOOD, ("now", "{}")])
    required = fmt.constraint(TOOLS, REQUIRED, parallel=True)
    named = fmt.constraint(TOOLS, NAMED, parallel=True)

    for grammar in (required, named):
        assert accepts(grammar, good)
        assert not accepts(grammar, "Hello there.")
        assert not accepts(grammar, "")
        assert not accepts(grammar, "Let me check. " + good)
        assert not accepts(grammar, fmt.call_text("get_time", '{"city": "Paris"}'))
        assert not accepts(grammar, fmt.call_text("get_weather", '{"city": 3}'))
    assert accepts(required, now)
    assert accepts(required, both) is not isinstance(fmt, Llama3JsonToolCallFormat)
    assert not accepts(named, now)


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_without_parallel_calls_one_call_at_most(fmt: Format) -> None:
    both = fmt.calls_text([GOOD, ("now", "{}")])
    for choice in (AUTO, REQUIRED):
        grammar = fmt.constraint(TOOLS, choice, parallel=False)
        assert accepts(grammar, fmt.call_text(*GOOD))
        assert not accepts(grammar, both)


def test_pythonic_grammar_takes_only_declared_keywords() -> None:
    grammar = PythonicToolCallFormat().constraint(TOOLS, REQUIRED, parallel=True)
    assert accepts(grammar, "[get_weather(city='Paris', days=-2)]")
    assert not accepts(grammar, '[get_weather("Paris")]')
    assert not accepts(grammar, '[get_weather(city="Paris", country="FR")]')
    assert not accepts(grammar, '[get_weather(days=2, city="Paris")]')  # declared order


def test_pythonic_grammar_needs_python_names() -> None:
    tool = ToolSpec("get-weather")
    with pytest.raises(InvalidRequestError, match="identifiers"):
        PythonicToolCallFormat().constraint([tool], AUTO, parallel=True)


def schema_of(value: Any, top: bool = False) -> dict[str, Any]:
    """The narrowest schema of `value` that both grammar kinds can express (nested objects are
    free: their keys are arbitrary text)."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        items = [schema_of(item) for item in value]
        if items and all(item == items[0] for item in items):
            return {"type": "array", "items": items[0]}
        return {"type": "array"}
    if not top:
        return {"type": "object"}
    properties = {key: schema_of(item) for key, item in value.items()}
    return {"type": "object", "properties": properties, "required": list(value)}


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_grammar_accepts_what_call_text_writes(fmt: Format, data: st.DataObject) -> None:
    # top-level property names are fixed text in the grammar (xgrammar's spelling): identifiers
    call = calls(fmt, keys=identifiers).filter(lambda call: call[0] != "now")
    name, arguments = data.draw(call)
    value = json.loads(arguments)
    tool = ToolSpec(name, parameters=schema_of(value, top=True))
    text = fmt.call_text(name, arguments)

    assert accepts(fmt.constraint([tool, NOW], AUTO, parallel=True), "Sure. " + text)
    assert accepts(fmt.constraint([tool, NOW], REQUIRED, parallel=False), text)


@pytest.fixture(scope="module")
def compiler() -> Any:
    """SmolLM2's tokenizer and an xgrammar compiler for it, as the engines build them."""
    import xgrammar as xgr

    from largeforge.adapters.models.resolver import packaged_tokenizer

    tokenizer = packaged_tokenizer("smollm2-135m-instruct")
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id]
    )
    return tokenizer, xgr.GrammarCompiler(info)


def test_grammars_compile_for_a_real_tokenizer_and_take_its_tokens(compiler: Any) -> None:
    """What the engines do: compile each format's grammars for SmolLM2's tokenizer, and walk a
    matcher through the tokens of a call to the end-of-sequence token."""
    import xgrammar as xgr

    tokenizer, grammars = compiler
    for fmt in FORMATS:
        for choice, prefix in ((AUTO, "Sure. "), (REQUIRED, ""), (NAMED, "")):
            for parallel in (True, False):
                constraint = fmt.constraint(TOOLS, choice, parallel)
                matcher = xgr.GrammarMatcher(grammars.compile_structural_tag(constraint.spec))
                text = prefix + fmt.call_text(*GOOD)
                for token in tokenizer.encode(text, add_special_tokens=False):
                    assert matcher.accept_token(token), (fmt.name, choice, text)
                assert matcher.accept_token(tokenizer.eos_token_id)
                assert matcher.is_terminated()
