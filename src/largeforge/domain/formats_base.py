"""What every row parser shares: the row error, type names and message roles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from largeforge.domain.datasets import Role


class RowError(ValueError):
    """A row cannot be used; `field` names the culprit and `kind` the reason's class."""

    def __init__(self, reason: str, field: str | None = None, kind: str = "invalid_row") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.kind = kind


def json_type(value: Any) -> str:
    """A value's type name for error messages (`null` for None)."""
    return "null" if value is None else type(value).__name__


def role_of(value: Any, field: str) -> Role:
    """A message's role, or a `RowError` listing the allowed ones."""
    if isinstance(value, str):
        try:
            return Role(value)
        except ValueError:
            pass
    allowed = ", ".join(r.value for r in Role)
    raise RowError(f"unknown role {value!r} (allowed: {allowed})", field, kind="unknown_role")


def join_parts(parts: list[Any], field: str) -> str:
    """OpenAI text content parts joined into one string."""
    texts = []
    for part in parts:
        if not (isinstance(part, Mapping) and part.get("type") == "text"):
            raise RowError("only text content parts are supported", field, kind="wrong_type")
        if not isinstance(part.get("text"), str):
            raise RowError("a text part needs a string 'text'", field, kind="wrong_type")
        texts.append(part["text"])
    return "".join(texts)
