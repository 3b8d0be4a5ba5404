"""`InferenceEngine` over transformers `generate` (one model, requests served in turn)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import structlog

from largeforge.adapters.system.device import detect_device, resolve_dtype
from largeforge.domain.datasets import Message
from largeforge.domain.generation import (
    Completion,
    FinishReason,
    SamplingParams,
    Usage,
    completion_budget,
)

log = structlog.get_logger(__name__)


class TransformersInferenceEngine:
    """Loads a model directory with transformers and answers chat requests.

    Generation runs in a worker thread so the event loop stays responsive; a lock keeps one
    `generate` call on the model at a time.
    """

    def __init__(
        self,
        model_dir: str,
        model_id: str,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self._torch = torch
        self._model_id = model_id
        info = detect_device(device)
        self._device = info.kind
        dtype_name = resolve_dtype(dtype, info)
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype_name)
        ).to(info.kind)
        self._model.eval()
        config_len = getattr(self._model.config, "max_position_embeddings", None) or 2048
        self._context_window = min(max_model_len or config_len, config_len)
        self._eos_ids = _eos_token_ids(self._model, self._tokenizer)
        self._lock = threading.Lock()
        log.info(
            "engine_loaded",
            model=model_id,
            path=model_dir,
            device=info.kind,
            dtype=dtype_name,
            context_window=self._context_window,
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_window(self) -> int:
        return self._context_window

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the conversation rendered with the model's chat template."""
        ids = self._tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):  # BatchEncoding in recent transformers
            ids = ids["input_ids"]
        return list(ids)

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> Completion:
        prompt_ids = self.render_prompt(messages)
        max_new = completion_budget(params, len(prompt_ids), self._context_window)
        return await asyncio.to_thread(self._generate, prompt_ids, params, max_new)

    def _generate(self, prompt_ids: list[int], params: SamplingParams, max_new: int) -> Completion:
        torch = self._torch
        inputs = torch.tensor([prompt_ids], device=self._device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "eos_token_id": self._eos_ids,
            "pad_token_id": self._tokenizer.pad_token_id or self._eos_ids[0],
            "attention_mask": torch.ones_like(inputs),
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            kwargs["top_k"] = None
        if params.stop:  # stop early; the stop text itself is cut below
            kwargs.update(stop_strings=list(params.stop), tokenizer=self._tokenizer)
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self._model.generate(inputs, **kwargs)
        new_ids = output[0, len(prompt_ids) :].tolist()
        finish = FinishReason.LENGTH
        if new_ids and new_ids[-1] in self._eos_ids:
            new_ids = new_ids[:-1]
            finish = FinishReason.STOP
        text = self._tokenizer.decode(new_ids, skip_special_tokens=True)
        # The EOS token counts: it was generated, as OpenAI-compatible servers report it.
        completion_tokens = len(output[0]) - len(prompt_ids)
        text, stopped = _apply_stop(text, params.stop)
        if stopped:
            finish = FinishReason.STOP
        usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens)
        return Completion(text=text, finish_reason=finish, usage=usage)

    async def mean_logprob(self, messages: Sequence[Message], response: str) -> float:
        """Mean log-probability per token of `response` (and EOS) after the rendered prompt."""
        prompt_ids = self.render_prompt(messages)
        response_ids = list(self._tokenizer(response, add_special_tokens=False)["input_ids"])
        response_ids.append(self._eos_ids[0])
        return await asyncio.to_thread(self._mean_logprob, prompt_ids, response_ids)

    def _mean_logprob(self, prompt_ids: list[int], response_ids: list[int]) -> float:
        torch = self._torch
        ids = torch.tensor([prompt_ids + response_ids], device=self._device)
        with self._lock, torch.inference_mode():
            logits = self._model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        targets = torch.tensor(response_ids, device=self._device).unsqueeze(1)
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, targets)
        return float(logprobs.mean())

    def close(self) -> None:
        self._model = None


class EngineLikelihoodScorer:
    """`ResponseScorer`: the model's own mean token log-likelihood of the response."""

    def __init__(self, engine: TransformersInferenceEngine) -> None:
        self._engine = engine

    async def score(self, prompt: Sequence[Message], response: str) -> float:
        return await self._engine.mean_logprob(prompt, response)


def _eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(configured)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence (the stop text itself is not returned)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
