"""Prompt token ids from a transformers tokenizer: the part every engine shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from largeforge.domain.datasets import Message


class TokenizerCodec:
    """`render_chat`, `tokenize` and `decode` of the `InferenceEngine` port over `_tokenizer`.

    Both engines render and count prompts this way, so usage counts agree between them.
    """

    _tokenizer: Any

    def render_chat(self, messages: Sequence[Message]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):  # BatchEncoding in recent transformers
            ids = ids["input_ids"]
        return list(ids)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))
