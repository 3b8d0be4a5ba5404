"""Text clean-up: unicode normalisation, line endings, control and zero-width characters."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFC-normalise, use `\\n` line endings, drop control and zero-width characters, strip ends.

    Tabs and newlines inside the text are kept: they matter for code and lists.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH.sub("", _CONTROL.sub("", text))
    return text.strip()


def normalized_key(text: str) -> str:
    """A key for near-duplicate detection: NFKC, case-folded, whitespace collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
