"""Tool-call formats: the grammar that makes a model write valid calls of the given tools, and
the streaming parser that splits its answer into content and calls (hermes, llama3_json,
mistral, pythonic). Pure Python; the grammars are xgrammar structural tags (`Constraint`s)."""

from largeforge.adapters.tools.json_formats import (
    HermesToolCallFormat,
    Llama3JsonToolCallFormat,
    MistralToolCallFormat,
)
from largeforge.adapters.tools.pythonic import PythonicToolCallFormat
from largeforge.adapters.tools.registry import (
    DEFAULT_FORMAT,
    TOOL_CALL_FORMATS,
    format_for_template,
    tool_call_format,
)
from largeforge.adapters.tools.scanning import StreamingToolCallParser

__all__ = [
    "DEFAULT_FORMAT",
    "TOOL_CALL_FORMATS",
    "HermesToolCallFormat",
    "Llama3JsonToolCallFormat",
    "MistralToolCallFormat",
    "PythonicToolCallFormat",
    "StreamingToolCallParser",
    "format_for_template",
    "tool_call_format",
]
