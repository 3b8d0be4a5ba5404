"""`largeforge data generate tools`: tool-use SFT conversations whose calls are valid by
construction (the grammar constrains them to each tool's schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from largeforge.application.tool_generation import read_tools
from largeforge.domain.errors import ConfigError, DatasetError
from largeforge.domain.tools import ToolSpec
from largeforge.entrypoints.cli.data import (
    _container,
    _engine,
    _positive,
    _progress_bar,
    _summary,
    _write_jsonl,
)


def _read_tools_file(path: Path) -> tuple[ToolSpec, ...]:
    """The tools of a JSON file; a missing, unreadable or invalid file is one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"tools file not found: {path}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text (expected a JSON list of tools)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the tools file ({exc.strerror or exc})") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    return read_tools(value, str(path))


def generate_tools(
    *,
    tools: Path,
    output: Annotated[Path, Parameter(name=["--output", "-o"])],
    model: str = "smollm2-135m-instruct",
    count: int = 20,
    no_call_share: float = 0.2,
    max_tokens: int = 256,
    temperature: float = 0.9,
    seed: int = 0,
) -> int:
    """Generate tool-use conversations: a request written by the model for each tool, answered
    with a call the grammar keeps valid for the tool's schema (messages format, JSON Lines).

    Parameters
    ----------
    tools
        A JSON file: a list of OpenAI function tools ({"type": "function", "function": {name,
        description, parameters}}), or an object {"tools": [...]}. Every row offers them all.
    output
        The .jsonl file to write (OpenAI messages with `tools` and `tool_calls`).
    model
        The model that writes the requests and answers them.
    count
        How many conversations to write.
    no_call_share
        The share of conversations whose request needs no tool, answered in text.
    max_tokens
        Longest answer (a call or text), in tokens.
    temperature
        Sampling temperature for the requests.
    seed
        Random seed (same seed, same output).
    """
    import asyncio

    _positive("count", count)
    _positive("max-tokens", max_tokens)
    if not 0.0 <= no_call_share <= 1.0:
        raise ConfigError(f"--no-call-share must be between 0 and 1, got {no_call_share}")
    if not 0.0 <= temperature <= 2.0:
        raise ConfigError(f"--temperature must be between 0 and 2, got {temperature}")
    specs = _read_tools_file(tools)
    container = _container()
    with _engine(container, model) as engine, _progress_bar(count, "generating tools") as bar:
        generator = container.generate_tool_data(
            engine=engine,
            no_call_share=no_call_share,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )
        result = asyncio.run(generator.execute(specs, count, progress=bar.update))
    rows = [record.as_row() for record in result.records]
    _write_jsonl(output, rows)
    code = _summary("tool", len(rows), output, result)
    if rows:
        calls = sum(1 for record in result.records if record.call is not None)
        print(f"  {calls} with a tool call, {len(rows) - calls} answered in text")
    return code
