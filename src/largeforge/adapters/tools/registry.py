"""The tool-call formats by name, and the one a chat template's text asks for."""

from __future__ import annotations

import re
from collections.abc import Callable

from largeforge.adapters.tools.json_formats import (
    HermesToolCallFormat,
    Llama3JsonToolCallFormat,
    MistralToolCallFormat,
)
from largeforge.adapters.tools.pythonic import PythonicToolCallFormat
from largeforge.application.ports import ToolCallFormat
from largeforge.domain.errors import ConfigError

TOOL_CALL_FORMATS: dict[str, Callable[[], ToolCallFormat]] = {
    HermesToolCallFormat.name: HermesToolCallFormat,
    Llama3JsonToolCallFormat.name: Llama3JsonToolCallFormat,
    MistralToolCallFormat.name: MistralToolCallFormat,
    PythonicToolCallFormat.name: PythonicToolCallFormat,
}

DEFAULT_FORMAT = HermesToolCallFormat.name
"""What the fallback tool prompt teaches (templates that say nothing about tools)."""

_PYTHONIC = re.compile(r"\[\s*func_name\d*\s*\(\s*param")
"""The pythonic instruction: `[func_name1(params_name1=params_value1, ...), func_name2(...)]`."""

_LLAMA3_JSON = re.compile(r'"parameters"\s*:\s*dictionary|"name"\s*:\s*function name')
"""Llama 3.1/3.2's instruction: `{"name": function name, "parameters": dictionary of ...}`."""


def format_for_template(chat_template: str | None) -> str:
    """The name of the tool-call format a chat template teaches its model.

    `<tool_call>` -> hermes; `[TOOL_CALLS]` -> mistral; a pythonic instruction
    (`[func_name1(params_name1=...`) -> pythonic; `<|python_tag|>` or Llama 3.1's
    `"parameters"` JSON instruction -> llama3_json; anything else (no tools in the template)
    -> hermes, which the fallback tool prompt teaches.
    """
    text = chat_template or ""
    if "<tool_call>" in text:
        return HermesToolCallFormat.name
    if "[TOOL_CALLS]" in text:
        return MistralToolCallFormat.name
    if _PYTHONIC.search(text):
        return PythonicToolCallFormat.name
    if "<|python_tag|>" in text or _LLAMA3_JSON.search(text):
        return Llama3JsonToolCallFormat.name
    return DEFAULT_FORMAT


def tool_call_format(name: str) -> ToolCallFormat:
    """The format called `name`; `ConfigError` naming the valid names for an unknown one."""
    factory = TOOL_CALL_FORMATS.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown tool-call format '{name}': choose one of {', '.join(TOOL_CALL_FORMATS)}"
        )
    return factory()
