"""EBNF text for xgrammar grammars (pure Python, shared by the grammar engine and formats)."""

from __future__ import annotations


def ebnf_literal(text: str) -> str:
    """`text` as a quoted EBNF string literal (quotes, backslashes, control characters escaped)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
