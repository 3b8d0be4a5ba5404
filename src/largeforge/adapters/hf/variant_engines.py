"""`EngineFactory` over the transformers engine: one model variant served under its name.

A base, merged, quantized or outside model is loaded from its directory and served as
`variant.name`; an adapter variant loads its base and registers the PEFT adapter under
`variant.name` (the base itself is then served as `<name>@base`, which evaluation never asks
for). The caller closes the engine, freeing the model before the next variant loads.
"""

from __future__ import annotations

from largeforge.application.ports import InferenceEngine
from largeforge.domain.evaluation import ModelVariant

BASE_SUFFIX = "@base"
"""The model id of an adapter variant's base (never evaluated itself)."""


class TransformersEngineFactory:
    """Opens a `TransformersInferenceEngine` per variant (torch imported on first `open`)."""

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_num_seqs: int = 16,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs

    def open(self, variant: ModelVariant) -> InferenceEngine:
        from largeforge.adapters.hf.inference import TransformersInferenceEngine

        adapter = variant.adapter_dir
        return TransformersInferenceEngine(
            model_dir=variant.model_dir,
            model_id=f"{variant.name}{BASE_SUFFIX}" if adapter else variant.name,
            device=self.device,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            adapters={variant.name: adapter} if adapter else None,
            max_num_seqs=self.max_num_seqs,
        )
