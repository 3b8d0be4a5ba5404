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
    request: ChatRequest, engine: InferenceEngine, tool_format: ToolCallFormat | None
) -> Constraint | None:
    """The grammar the answer must match (compiled and checked now), or None.

    A grammar the engine cannot compile is a 400 naming `tools` or `response_format`.
    """
    answer = request.response_format.structural_format()
    if request.uses_tools:
        assert tool_format is not None
        choice, parallel = request.tool_choice, request.parallel_tool_calls
        if answer is not None and choice.mode is ToolChoiceMode.AUTO:
            # either an answer in the requested format, or calls
            calls = tool_format.constraint(request.tools, ToolChoice(ToolChoiceMode.REQUIRED),
                                           parallel).value()["format"]  # fmt: skip
            either = {"type": "or", "elements": [answer, calls]}
            constraint = Constraint.structural_tag({"type": "structural_tag", "format": either})
        else:
            constraint = tool_format.constraint(request.tools, choice, parallel)
        param = "tools"
    else:
        found = request.response_format.constraint()
        if found is None:
            return None
        constraint, param = found, "response_format"
    try:
        engine.check_constraint(constraint)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{param}: {exc}", param=param) from None
    return constraint


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ReplySplitter:
    """One choice's text through a tool-call parser: content text and call pieces with ids."""

    tool_format: ToolCallFormat
    parser: ToolCallParser = field(init=False)
    ids: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parser = self.tool_format.parser()

    @property
    def called(self) -> bool:
        return bool(self.ids)

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
                continue
            if piece.index not in self.ids:
                self.ids[piece.index] = new_call_id()
                piece = ToolCallDelta(piece.index, self.ids[piece.index], piece.name,
                                      piece.arguments)  # fmt: skip
            last = calls[-1] if calls else None
            if (
                last is not None
                and last.index == piece.index
                and last.name is None
                and piece.id is None
            ):
                calls[-1] = ToolCallDelta(last.index, last.id, last.name,
                                          last.arguments + piece.arguments)  # fmt: skip
            elif piece.id is not None or piece.arguments:
                calls.append(piece)
        return "".join(text), tuple(calls)


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
        ToolCall(ids.get(i, new_call_id()), names.get(i, ""), "".join(arguments[i]))
        for i in sorted(arguments)
    )
