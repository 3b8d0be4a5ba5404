"""What the generation and tool-call evaluation tasks share: reading a file of rows (every bad
row reported before any model loads) and answering many chat requests on one engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog

from largeforge.application.ports import InferenceEngine, RowSource
from largeforge.application.serving import TextGeneration, ToolFormats
from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import DatasetError, InvalidRequestError
from largeforge.domain.formats import RowError, json_type
from largeforge.domain.generation import ChatRequest, Choice, OverflowPolicy

T = TypeVar("T")
log = structlog.get_logger(__name__)

SHOWN_PROBLEMS = 3
"""Bad rows named in the error message (the rest are counted)."""


def read_rows(
    source: RowSource, path: str, parse: Callable[[Mapping[str, Any], int], T | None]
) -> tuple[T, ...]:
    """`parse` every row of `path` (it returns None for a row that only sets defaults).

    A row that is not JSON, not an object, or that `parse` refuses with a `RowError` is a
    problem; all of them are collected and raised as one `DatasetError` naming the file, and
    for each (up to `SHOWN_PROBLEMS`) the line, the field and the reason.
    """
    name = source.name(path)
    parsed: list[T] = []
    problems: list[str] = []
    for raw in source.rows(path):
        if raw.error is not None:
            problems.append(f"line {raw.line}: {raw.error}")
            continue
        if not isinstance(raw.value, Mapping):
            problems.append(f"line {raw.line}: a row must be a JSON object")
            continue
        try:
            item = parse(raw.value, raw.line)
        except RowError as error:
            field = f" field '{error.field}'" if error.field else ""
            problems.append(f"line {raw.line}{field}: {error.reason}")
            continue
        if item is not None:
            parsed.append(item)
    if problems:
        shown = "; ".join(problems[:SHOWN_PROBLEMS])
        more = len(problems) - SHOWN_PROBLEMS
        tail = f" (and {more} more bad rows)" if more > 0 else ""
        raise DatasetError(f"{name}: {shown}{tail}")
    if not parsed:
        raise DatasetError(f"{name}: no rows to evaluate")
    return tuple(parsed)


def answer_all(
    engine: InferenceEngine,
    requests: Sequence[ChatRequest],
    *,
    lines: Sequence[int],
    name: str,
    tool_formats: ToolFormats | None = None,
    tool_call_parser: str | None = None,
    tool_grammar: bool = True,
    concurrency: int = 8,
) -> list[Choice]:
    """The first choice of each request, answered through `TextGeneration` as the server does
    (at most `concurrency` at once, so the engine batches them). A request the model cannot
    take (its prompt does not fit) is a `DatasetError` naming the row's line."""
    generation = TextGeneration(
        [engine],
        OverflowPolicy.TRUNCATE_MAX_TOKENS,
        tool_formats=tool_formats,
        tool_call_parser=tool_call_parser,
        tool_grammar=tool_grammar,
    )

    total = len(requests)
    every = max(1, total // 10)

    async def run() -> list[Choice]:
        gate = asyncio.Semaphore(max(1, concurrency))
        done = 0

        async def one(request: ChatRequest, line: int) -> Choice:
            nonlocal done
            async with gate:
                try:
                    completion = await generation.chat(request)
                except InvalidRequestError as exc:
                    raise DatasetError(f"{name} line {line}: {exc}") from None
            done += 1
            if done % every == 0 or done == total:
                log.info("eval_progress", task=name, model=request.model, done=done, total=total)
            return completion.choices[0]

        return list(
            await asyncio.gather(*(one(r, n) for r, n in zip(requests, lines, strict=True)))
        )

    return asyncio.run(run())


def optional_max_tokens(row: Mapping[str, Any]) -> int | None:
    """A row's own `max_tokens` (a positive integer), or None for the task's default."""
    value = row.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RowError(f"'max_tokens' must be a positive integer, got {value!r}", "max_tokens")
    return value


def with_system(row: Mapping[str, Any], messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """`messages` with the row's optional `system` text as a first system turn (unless they
    start with one, or it is blank)."""
    system = row.get("system")
    if system is None:
        return messages
    if not isinstance(system, str):
        raise RowError(f"'system' must be a string, got {json_type(system)}", "system")
    if messages[0].role is not Role.SYSTEM and system.strip():
        return (Message(Role.SYSTEM, system), *messages)
    return messages
