"""`ModelInspector` from a model's config: the architecture and every linear layer's width,
found by building the model on PyTorch's meta device (no weights are read or allocated)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from largeforge.domain.errors import ModelNotFoundError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def ignored(name: str, patterns: Sequence[str]) -> bool:
    """llm-compressor's ignore syntax: `re:PATTERN` (full match) or a module name / suffix."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], name):
                return True
        elif name == pattern or name.endswith("." + pattern):
            return True
    return False


class HfModelInspector:
    def architecture(self, model_dir: str) -> str:
        config = Path(model_dir) / "config.json"
        if not config.is_file():
            raise ModelNotFoundError(f"no config.json in {model_dir}")
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
        return str(architectures[0]) if architectures else "unknown"

    def linear_widths(self, model_dir: str, ignore: Sequence[str]) -> dict[str, int]:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return {
            name: int(module.in_features)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not ignored(name, ignore)
        }

    def weights_bytes(self, model_dir: str) -> int:
        return sum(
            f.stat().st_size
            for f in Path(model_dir).iterdir()
            if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)
        )
