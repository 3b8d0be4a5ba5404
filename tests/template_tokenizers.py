"""Offline tokenizers that carry a real model's tool-calling chat template (tests only).

`tokenizer_with_template(name)` takes the repository's packaged SmolLM2 tokenizer, adds the
special tokens a template needs, and sets the template from `tests/fixtures/templates/`. The
vocabulary stays SmolLM2's: token ids differ from the real model's, but every template marker is a
single special token, which is what token-by-token loss-mask tests need.

Names: "qwen2_5" (Qwen2.5-Instruct, hermes-style `<tool_call>` JSON) and "llama3_1"
(Llama-3.1-Instruct, `{"name": ..., "parameters": ...}` calls and `ipython` tool turns).
Provenance of each template: tests/fixtures/templates/README.md.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATES_DIR = Path(__file__).parent / "fixtures" / "templates"


@dataclass(frozen=True)
class TemplateSpec:
    """What a template needs from its tokenizer: special tokens and bos/eos."""

    filename: str
    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str


TEMPLATE_SPECS: dict[str, TemplateSpec] = {
    # Qwen2.5 has no bos token; turns end with <|im_end|>. SmolLM2 already has all three tokens.
    "qwen2_5": TemplateSpec(
        filename="qwen2_5.jinja",
        special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
        bos_token=None,
        eos_token="<|im_end|>",
    ),
    # Llama 3.1 renders `bos_token` itself; turns end with <|eot_id|> (<|eom_id|> in ipython mode).
    "llama3_1": TemplateSpec(
        filename="llama3_1.jinja",
        special_tokens=(
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    ),
}


def template_text(name: str) -> str:
    """The fixture template's text, byte for byte."""
    path = TEMPLATES_DIR / TEMPLATE_SPECS[name].filename
    return path.read_text(encoding="utf-8")


def tokenizer_with_template(name: str) -> Any:
    """A fresh copy of the SmolLM2 tokenizer set up for template `name` (mutating it is safe)."""
    return copy.deepcopy(_cached_tokenizer(name))


@functools.cache
def _cached_tokenizer(name: str) -> Any:
    # Shared across callers: never hand this object out, only deep copies of it.
    from largeforge.adapters.models.resolver import packaged_tokenizer

    if name not in TEMPLATE_SPECS:
        raise KeyError(f"unknown template {name!r}; known: {sorted(TEMPLATE_SPECS)}")
    spec = TEMPLATE_SPECS[name]
    tokenizer = packaged_tokenizer("smollm2-135m-instruct")  # a fresh object per call
    tokenizer.add_special_tokens(
        {"additional_special_tokens": list(spec.special_tokens)},
        replace_extra_special_tokens=False,
    )
    tokenizer.bos_token = spec.bos_token
    tokenizer.eos_token = spec.eos_token
    # pad stays SmolLM2's <|endoftext|>: not a marker in either template.
    tokenizer.chat_template = template_text(name)
    return tokenizer
