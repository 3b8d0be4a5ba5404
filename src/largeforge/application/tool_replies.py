"""Answers with tool calls: the grammar a request needs, and its text split into content and calls.

`output_constraint` decides what one chat request constrains: its tool calls (the format's
grammar, under `auto` free text whose every started call is valid) or its response format.
`ReplySplitter` runs one choice's generated text through the format's parser, gives each call
an id, and merges the pieces into `ChoiceDelta` fields; the unstreamed answer is the streamed
one joined, so both are the same by construction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from largeforge.application.ports import (
    InferenceEngine,
    ReplyPiece,
    ToolCallFormat,
    ToolCallParser,
)
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.generation import ChatRequest, ToolCallDelta
from largeforge.domain.tools import Constraint, ToolCall, ToolChoice, ToolChoiceMode


def output_constraint(
    request: ChatRequest, tool_format: ToolCallFormat | None
) -> tuple[Constraint, str] | None:
    """The grammar the answer must match and the parameter that asked for it, or None.

    Tools (unless `tool_choice` is `none`) constrain the answer to the format's calls; under
    `auto` with a response format, to that format or calls. Otherwise the response format.
    """
    answer = request.response_format.structural_format()
    if request.uses_tools:
        assert tool_format is not None
        choice, parallel = request.tool_choice, request.parallel_tool_calls
        if answer is not None and choice.mode is ToolChoiceMode.AUTO:
            # either an answer in the requested format, or calls
            required = ToolChoice(ToolChoiceMode.REQUIRED)
            calls = tool_format.constraint(request.tools, required, parallel).value()["format"]
            either = {"type": "or", "elements": [answer, calls]}
            constraint = Constraint.structural_tag({"type": "structural_tag", "format": either})
        else:
            constraint = tool_format.constraint(request.tools, choice, parallel)
        return constraint, "tools"
    found = request.response_format.constraint()
    return None if found is None else (found, "response_format")


def check_output(engine: InferenceEngine, constraint: Constraint, param: str) -> None:
    """Compile `constraint` on `engine` (cached there); a refusal is a 400 naming `param`."""
    try:
        engine.check_constraint(constraint)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{param}: {exc}", param=param) from None


def new_call_id(tool_format: str = "") -> str:
    """An OpenAI-style tool call id (9 alphanumerics for Mistral, whose templates insist)."""
    if tool_format == "mistral":
        return uuid.uuid4().hex[:9]
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ReplySplitter:
    """One choice's text through a tool-call parser: content text and call pieces with ids.

    Calls are numbered from 0 in the order they start. A call of a function that is not among
    `tools` (free text under `auto` that a parser looser than the grammar read as a call) is
    left out whole: an answer never names an unknown function.
    """

    tool_format: ToolCallFormat
    tools: frozenset[str] = frozenset()
    parser: ToolCallParser = field(init=False)
    numbers: dict[int, int] = field(default_factory=dict)  # the parser's index -> the answer's
    dropped: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.parser = self.tool_format.parser()

    @property
    def called(self) -> bool:
        return bool(self.numbers)

    def feed(self, text: str) -> tuple[str, tuple[ToolCallDelta, ...]]:
        return self._merge(self.parser.feed(text) if text else [])

    def finish(self) -> tuple[str, tuple[ToolCallDelta, ...]]:
        return self._merge(self.parser.finish())

    def _merge(self, pieces: Sequence[ReplyPiece]) -> tuple[str, tuple[ToolCallDelta, ...]]:
        text: list[str] = []
        calls: list[ToolCallDelta] = []
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
            elif piece.index not in self.dropped:
                self._call(piece, calls)
        return "".join(text), tuple(calls)

    def _call(self, piece: ToolCallDelta, calls: list[ToolCallDelta]) -> None:
        if piece.index not in self.numbers:
            if self.tools and piece.name not in self.tools:
                self.dropped.add(piece.index)
                return
            number = self.numbers[piece.index] = len(self.numbers)
            call_id = new_call_id(self.tool_format.name)
            calls.append(ToolCallDelta(number, call_id, piece.name, piece.arguments))
            return
        number = self.numbers[piece.index]
        last = calls[-1] if calls else None
        if last is not None and last.index == number and last.name is None:
            calls[-1] = ToolCallDelta(number, None, None, last.arguments + piece.arguments)
        elif piece.arguments:
            calls.append(ToolCallDelta(number, None, None, piece.arguments))


def joined_calls(deltas: Sequence[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The calls that `deltas` stream, in index order (arguments joined)."""
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for delta in deltas:
        if delta.id is not None:
            ids[delta.index] = delta.id
        if delta.name is not None:
            names[delta.index] = delta.name
        arguments.setdefault(delta.index, []).append(delta.arguments)
    return tuple(
        ToolCall(ids.get(i) or new_call_id(), names.get(i, ""), "".join(arguments[i]))
        for i in sorted(arguments)
    )
