"""One-line reasons from xgrammar's (and vLLM's) errors, for 400 messages."""

from __future__ import annotations

import re

MAX_REASON = 300
"""Characters of a message kept in an error (xgrammar may quote the whole schema)."""

# where xgrammar's C++ raised, which starts its messages: "[18:32:21] /project/cpp/x.cc:83: "
_LOG_PREFIX = re.compile(r"\[[0-9:]+\] \S+:\d+: ")
_CHECK_FAILED = re.compile(r"^Check failed: .*? is false: ")


def one_line(exc: BaseException) -> str:
    """An error's first non-empty line without xgrammar's log prefix and assertion text,
    shortened to `MAX_REASON` (its type's name when it has no text)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = _CHECK_FAILED.sub("", _LOG_PREFIX.sub("", text, count=1))
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3] + "..."
    return text or type(exc).__name__
