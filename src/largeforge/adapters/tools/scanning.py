"""The streaming machinery shared by the tool-call parsers: openers matched a character at a
time, an incremental JSON scanner for argument objects, and one parser driven by a `CallSyntax`.

How a parser reads an answer
----------------------------
Text is content until an *opener* matches: the format's trigger and the call's header up to and
including the `{` of its arguments (`<tool_call>\\n{"name": "f", "arguments": {`). While an
opener may still match, its text is held back; when it cannot, its first character is released
as content and the rest is read again (a trigger may start inside it: `<<tool_call>`). The name
is announced once the whole header has matched, so a header that turns out not to be one never
announced a call. The arguments then stream as raw text, a small JSON scanner (strings,
escapes, depth) telling where the object ends, and the format's *tail* (`}\\n</tool_call>`) is
call syntax again.

Every decision depends only on the characters read so far, one at a time, so any chunking of
the same text gives the same content and the same calls (only the sizes of the pieces differ).

Whitespace: blanks before the first call (when nothing else came before it), between calls
(with the format's separator, `;` for Llama 3) and after the last call are dropped; blanks
between text and a call are content. Text that only looked like a call is content, byte for
byte. An answer cut off inside the arguments keeps what streamed; cut inside a header, the held
text is content (no call was announced).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from largeforge.application.ports import ReplyPiece
from largeforge.domain.generation import ToolCallDelta

WHITESPACE = " \t\n\r"
"""JSON's whitespace: the blanks a parser drops around calls and skips inside headers."""


# ---------- Openers and tails: tiny deterministic patterns matched a character at a time ----------


@dataclass(frozen=True, slots=True)
class Lit:
    """Exactly `text`."""

    text: str


@dataclass(frozen=True, slots=True)
class Opt:
    """`text` or nothing (decided by the first character); with `blanks`, whitespace may
    follow `text` (and only when `text` is there)."""

    text: str
    blanks: bool = False


@dataclass(frozen=True, slots=True)
class OneOf:
    """One of `texts` (none a prefix of another)."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ws:
    """Any run of JSON whitespace, possibly empty."""


@dataclass(frozen=True, slots=True)
class Str:
    """A JSON string, captured decoded (the call's name)."""


@dataclass(frozen=True, slots=True)
class Ident:
    """A Python identifier, captured (the pythonic call's name)."""


Element = Lit | Opt | OneOf | Ws | Str | Ident
Pattern = tuple[Element, ...]


class Step(Enum):
    MORE = "more"
    DONE = "done"
    FAIL = "fail"


class Matcher:
    """Matches one `Pattern` a character at a time; `captured` holds the Str/Ident captures.

    The patterns are deterministic (a character never leaves a choice open), so no backtracking:
    an element that ends on a character it does not take (Ws, Opt, Ident) hands it on.
    """

    __slots__ = ("_blanks", "_buf", "_escape", "_index", "_pattern", "_prefix", "captured")

    def __init__(self, pattern: Pattern, prefix: int = 0) -> None:
        self._pattern = pattern
        self._prefix = prefix
        self._index = 0
        self._buf = ""
        self._escape = False
        self._blanks = False  # after an `Opt` with blanks: whitespace is still taken
        self.captured: list[str] = []

    @property
    def in_prefix(self) -> bool:
        """Whether the match is still within the first `prefix` elements (a droppable gap)."""
        return self._index < self._prefix

    def step(self, char: str) -> Step:
        pattern = self._pattern
        if self._blanks:
            if char in WHITESPACE:
                return Step.MORE
            self._blanks = False
        while self._index < len(pattern):
            element = pattern[self._index]
            if isinstance(element, Ws):
                if char in WHITESPACE:
                    return Step.MORE
                self._advance()
                continue
            if isinstance(element, Lit | Opt):
                text = element.text
                if not self._buf and isinstance(element, Opt) and char != text[0]:
                    self._advance()
                    continue
                if char != text[len(self._buf)]:
                    return Step.FAIL
                self._buf += char
                if len(self._buf) == len(text):
                    self._blanks = isinstance(element, Opt) and element.blanks
                    return self._advance()
                return Step.MORE
            if isinstance(element, OneOf):
                candidate = self._buf + char
                if not any(text.startswith(candidate) for text in element.texts):
                    return Step.FAIL
                self._buf = candidate
                if candidate in element.texts:
                    return self._advance()
                return Step.MORE
            if isinstance(element, Str):
                return self._string(char)
            # Ident
            if (self._buf + char).isidentifier():
                self._buf += char
                return Step.MORE
            if not self._buf:
                return Step.FAIL
            self.captured.append(self._buf)
            self._advance()
        return Step.FAIL  # the pattern is complete; nothing more is expected

    def _string(self, char: str) -> Step:
        if not self._buf:
            if char != '"':
                return Step.FAIL
            self._buf = char
            return Step.MORE
        self._buf += char
        if self._escape:
            self._escape = False
        elif char == "\\":
            self._escape = True
        elif char == '"':
            try:
                value = json.loads(self._buf)
            except ValueError:
                return Step.FAIL
            self.captured.append(value)
            return self._advance()
        return Step.MORE

    def _advance(self) -> Step:
        self._index += 1
        self._buf = ""
        return Step.DONE if self._index == len(self._pattern) else Step.MORE


def first_chars(pattern: Pattern) -> frozenset[str] | None:
    """The characters a match of `pattern` can start with (None: an identifier, i.e. many)."""
    chars: set[str] = set()
    for element in pattern:
        if isinstance(element, Ws):
            chars.update(WHITESPACE)
        elif isinstance(element, Opt):
            chars.add(element.text[0])
        elif isinstance(element, Lit):
            chars.add(element.text[0])
            return frozenset(chars)
        elif isinstance(element, OneOf):
            chars.update(text[0] for text in element.texts)
            return frozenset(chars)
        elif isinstance(element, Str):
            chars.add('"')
            return frozenset(chars)
        else:
            return None
    return frozenset(chars)


def json_header(keys: Sequence[str]) -> Pattern:
    """`{"name": "<name>", "<key>": {` with free whitespace, `key` one of `keys`."""
    return (
        Lit("{"),
        Ws(),
        Lit('"name"'),
        Ws(),
        Lit(":"),
        Ws(),
        Str(),
        Ws(),
        Lit(","),
        Ws(),
        OneOf(tuple(json.dumps(key) for key in keys)),
        Ws(),
        Lit(":"),
        Ws(),
        Lit("{"),
    )


# ---------- The JSON scanner of an arguments object ----------


class JsonObjectScanner:
    """Finds the end of a JSON value from its first `{`: depth, strings and escapes only."""

    __slots__ = ("_depth", "_escape", "_in_string")

    def __init__(self) -> None:
        self._depth = 1  # the opening brace was read by the header
        self._in_string = False
        self._escape = False

    def scan(self, text: str, start: int) -> int:
        """The index just past the value's closing brace in `text` (scanned from `start`), or
        -1 when the value goes on beyond `text`."""
        depth, in_string, escape = self._depth, self._in_string, self._escape
        for i in range(start, len(text)):
            char = text[i]
            if in_string:
                if escape:
                    escape = False
                elif char == "\\":
                    escape = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    self._depth = 0
                    return i + 1
        self._depth, self._in_string, self._escape = depth, in_string, escape
        return -1


# ---------- The parser ----------


class BlockScanner(Protocol):
    """Reads a block of calls that is checked whole (pythonic): `feed` takes the characters
    after the opener and finds where the block closes; `calls` judges the whole block."""

    def feed(self, text: str, start: int) -> int:
        """The index just past the block's end in `text` (read from `start`), or -1."""
        ...

    def calls(self, text: str) -> list[tuple[str, str]] | None:
        """The calls of the whole block `text` (name, arguments JSON), None when it is not a
        valid block (then it is content)."""
        ...


@dataclass(frozen=True, slots=True)
class CallSyntax:
    """How one format's calls look to the parser.

    `opener` starts a block and ends at the arguments' `{` (capturing the name), or for block
    formats at the point where `block()` takes over. `gap` is the separator allowed (dropped)
    between calls besides whitespace. `tail` follows the arguments object; when its last
    element is a `OneOf`, the text in `more` continues the block with `next_header` (Mistral's
    `, {"name": ...`), any other ends it.
    """

    opener: Pattern
    tail: Pattern = ()
    gap: str | None = None
    more: str | None = None
    next_header: Pattern = ()
    block: Callable[[], BlockScanner] | None = None
    start_prefix: Pattern = field(init=False)
    after_prefix: Pattern = field(init=False)

    def __post_init__(self) -> None:
        gap: Pattern = (Ws(), Opt(self.gap), Ws()) if self.gap else (Ws(),)
        object.__setattr__(self, "start_prefix", (Ws(),))
        object.__setattr__(self, "after_prefix", gap)


class _Mode(Enum):
    CONTENT = "content"  # text; `_matcher` set while an opener may be matching
    ARGS = "args"  # inside a call's arguments object
    TAIL = "tail"  # after the arguments: the tail, then maybe the next header
    NEXT = "next"  # inside a block, matching the next call's header
    BLOCK = "block"  # inside a block read whole (pythonic)


class _Where(Enum):
    START = "start"  # nothing emitted yet: blanks before a call are dropped
    AFTER_CALL = "after_call"  # just after a call: blanks (and the gap) before a call or the end
    TEXT = "text"  # after content: an opener must start right here


class StreamingToolCallParser:
    """A `ToolCallParser` for one answer, driven by a `CallSyntax`."""

    def __init__(self, syntax: CallSyntax) -> None:
        self._syntax = syntax
        self._mode = _Mode.CONTENT
        self._where = _Where.START
        self._text = ""
        self._pos = 0
        self._held = ""  # text of a possible opener/tail/header, not yet content or syntax
        self._matcher: Matcher | None = None
        self._json: JsonObjectScanner | None = None
        self._block: BlockScanner | None = None
        self._calls = 0
        self._out: list[ReplyPiece] = []
        self._starts = {
            where: first_chars(prefix + syntax.opener)
            for where, prefix in (
                (_Where.START, syntax.start_prefix),
                (_Where.AFTER_CALL, syntax.after_prefix),
                (_Where.TEXT, ()),
            )
        }

    # ----- the port -----

    def feed(self, text: str) -> list[ReplyPiece]:
        self._text = self._text[self._pos :] + text
        self._pos = 0
        self._run()
        return self._flush()

    def finish(self) -> list[ReplyPiece]:
        self._run()
        while True:
            if self._mode is _Mode.CONTENT and self._matcher is not None:
                if self._where is _Where.AFTER_CALL and self._matcher.in_prefix:
                    self._reset_content()  # trailing blanks after the last call
                else:
                    self._release()
                    self._run()
                    continue
            elif self._mode is _Mode.BLOCK:
                self._release()  # an unfinished block is not a valid one
                self._run()
                continue
            # inside arguments: what streamed stands; inside a tail or a next header: syntax
            break
        self._mode = _Mode.CONTENT
        self._matcher = None
        self._held = ""
        return self._flush()

    # ----- the machine -----

    def _run(self) -> None:
        while self._pos < len(self._text):
            mode = self._mode
            if mode is _Mode.CONTENT:
                self._content()
            elif mode is _Mode.ARGS:
                self._args()
            elif mode is _Mode.BLOCK:
                self._block_text()
            else:
                self._syntax_char()

    def _content(self) -> None:
        text, pos = self._text, self._pos
        if self._matcher is None:
            starts = self._starts[self._where]
            end = pos
            if starts is not None:  # else any character may start an opener
                while end < len(text) and text[end] not in starts:
                    end += 1
            if end > pos:
                self._emit_content(text[pos:end])
                self._pos = pos = end
                if pos == len(text):
                    return
            where = self._where
            prefix = {
                _Where.START: self._syntax.start_prefix,
                _Where.AFTER_CALL: self._syntax.after_prefix,
                _Where.TEXT: (),
            }[where]
            self._matcher = Matcher(prefix + self._syntax.opener, prefix=len(prefix))
        matcher = self._matcher
        char = text[pos]
        self._pos = pos + 1
        self._held += char
        step = matcher.step(char)
        if step is Step.FAIL:
            self._release()
        elif step is Step.DONE:
            self._opened(matcher.captured)

    def _opened(self, captured: list[str]) -> None:
        """An opener matched: a call's header (JSON formats) or a block's start."""
        self._matcher = None
        if self._syntax.block is not None:
            self._block = self._syntax.block()
            self._mode = _Mode.BLOCK
            return
        self._held = ""
        self._start_call(captured[-1])

    def _start_call(self, name: str) -> None:
        self._out.append(ToolCallDelta(index=self._calls, name=name))
        self._out.append(ToolCallDelta(index=self._calls, arguments="{"))
        self._json = JsonObjectScanner()
        self._mode = _Mode.ARGS

    def _args(self) -> None:
        assert self._json is not None
        text, pos = self._text, self._pos
        end = self._json.scan(text, pos)
        stop = len(text) if end < 0 else end
        if stop > pos:
            self._append_arguments(text[pos:stop])
        self._pos = stop
        if end >= 0:
            self._json = None
            self._calls += 1
            if self._syntax.tail:
                self._mode = _Mode.TAIL
                self._matcher = Matcher(self._syntax.tail)
                self._held = ""
            else:
                self._call_ended()

    def _syntax_char(self) -> None:
        """A character of a tail or of the next call's header inside a block."""
        matcher = self._matcher
        assert matcher is not None
        char = self._text[self._pos]
        self._pos += 1
        self._held += char
        step = matcher.step(char)
        if step is Step.FAIL:
            self._release()
        elif step is Step.DONE:
            if self._mode is _Mode.NEXT:
                self._matcher = None
                self._held = ""
                self._start_call(matcher.captured[-1])
            elif self._syntax.more is not None and char == self._syntax.more:
                self._mode = _Mode.NEXT
                self._matcher = Matcher(self._syntax.next_header)
            else:
                self._call_ended()

    def _block_text(self) -> None:
        block = self._block
        assert block is not None
        text, pos = self._text, self._pos
        end = block.feed(text, pos)
        stop = len(text) if end < 0 else end
        self._held += text[pos:stop]
        self._pos = stop
        if end < 0:
            return
        calls = block.calls(self._held)
        if calls is None:
            self._release()
            return
        self._block = None
        for name, arguments in calls:
            self._out.append(ToolCallDelta(index=self._calls, name=name))
            self._out.append(ToolCallDelta(index=self._calls, arguments=arguments))
            self._calls += 1
        self._call_ended()

    def _call_ended(self) -> None:
        self._mode = _Mode.CONTENT
        self._where = _Where.AFTER_CALL
        self._matcher = None
        self._held = ""

    def _release(self) -> None:
        """What was held is not call syntax: its first character is content, the rest is read
        again as text (an opener may start inside it)."""
        held = self._held
        self._reset_content()
        self._emit_content(held[0])
        self._text = held[1:] + self._text[self._pos :]
        self._pos = 0

    def _reset_content(self) -> None:
        self._mode = _Mode.CONTENT
        self._matcher = None
        self._block = None
        self._held = ""

    # ----- output -----

    def _emit_content(self, text: str) -> None:
        self._where = _Where.TEXT
        out = self._out
        if out and isinstance(out[-1], str):
            out[-1] += text
        else:
            out.append(text)

    def _append_arguments(self, text: str) -> None:
        out = self._out
        last = out[-1] if out else None
        if isinstance(last, ToolCallDelta) and last.name is None and last.index == self._calls:
            out[-1] = ToolCallDelta(index=last.index, arguments=last.arguments + text)
        else:
            out.append(ToolCallDelta(index=self._calls, arguments=text))

    def _flush(self) -> list[ReplyPiece]:
        out, self._out = self._out, []
        return out
