"""`InferenceEngine` over a transformers model with continuous batching and LoRA adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.grammar.xgrammar import XgrammarGrammarEngine
from largeforge.adapters.hf import cpu_kernels, serving_attention
from largeforge.adapters.hf.batching import ContinuousBatcher, StepHook
from largeforge.adapters.hf.decode_step import LlamaDecodeStep
from largeforge.adapters.hf.fast_linear import can_prepack, prepack_linears
from largeforge.adapters.hf.fused_projections import fuse_projections
from largeforge.adapters.hf.prompts import TokenizerCodec
from largeforge.adapters.hf.sampling import TokenTexts, logprob_entry
from largeforge.adapters.hf.threads import serial_here
from largeforge.adapters.system.device import detect_device, resolve_dtype
from largeforge.application.ports import EngineLoad
from largeforge.domain.datasets import Message
from largeforge.domain.errors import ConfigError, InvalidRequestError
from largeforge.domain.generation import SamplingParams, TokenLogprob, TokenStep
from largeforge.domain.tools import Constraint

log = structlog.get_logger(__name__)


class TransformersInferenceEngine(TokenizerCodec):
    """Loads a model directory with transformers and serves it with continuous batching.

    `adapters` maps served model ids to LoRA adapter directories; a batch may mix them (PEFT
    applies each row's adapter), and the base model stays servable under `model_id`.
    `on_step` observes every forward pass (which sequences ran in it, under which adapter).
    Output constraints (`SamplingParams.constraint`) are compiled by xgrammar, once per value.
    `adapter_loading` allows `load_adapter` at run time; it keeps the linears PEFT may wrap
    unpacked (no fused projections, no prepacked kernels), which costs decode speed.
    """

    def __init__(
        self,
        model_dir: str,
        model_id: str,
        device: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
        adapters: Mapping[str, str] | None = None,
        max_num_seqs: int = 16,
        max_queue: int = 256,
        on_step: StepHook | None = None,
        adapter_loading: bool = False,
    ) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self._model_id = model_id
        info = detect_device(device)
        dtype_name = resolve_dtype(dtype, info)
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._adapters = tuple(adapters or {})
        self._adapter_loading = adapter_loading
        with serial_here():  # this thread starts no OpenMP team of its own (see threads.py)
            model, prepacked, fused = _load(
                model_dir, dtype_name, info.kind, adapters or {}, max_num_seqs, adapter_loading
            )
        config_len = getattr(model.config, "max_position_embeddings", None) or 2048
        self._context_window = min(max_model_len or config_len, config_len)
        self._eos_ids = _eos_token_ids(model, self._tokenizer)
        self._device = info.kind
        self._model = model
        self._texts = TokenTexts(self._tokenizer)
        self._grammar = XgrammarGrammarEngine(self._tokenizer, self.vocab_size, self._eos_ids)
        decode_step = LlamaDecodeStep.for_model(model)
        self._batcher = ContinuousBatcher(
            model,
            self._tokenizer,
            self._eos_ids,
            info.kind,
            max_num_seqs=max_num_seqs,
            max_queue=max_queue,
            use_adapters=bool(adapters),
            on_step=on_step,
            grammar=self._grammar,
            decode_step=decode_step,
        )
        log.info(
            "engine_loaded",
            model=model_id,
            path=model_dir,
            device=info.kind,
            dtype=dtype_name,
            dtype_reason=info.dtype_reason if dtype == "auto" else f"--dtype {dtype}",
            prepacked_linears=prepacked,
            fused_projections=fused,
            flat_decode_step=decode_step is not None,
            context_window=self._context_window,
            adapters=list(self._adapters),
            max_num_seqs=max_num_seqs,
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
        return int(self._model.get_input_embeddings().num_embeddings)

    @property
    def eos_token_id(self) -> int:
        return self._eos_ids[0]

    @property
    def grammar(self) -> XgrammarGrammarEngine:
        """The compiler of output constraints (its `compiles` count shows the cache at work)."""
        return self._grammar

    def check_constraint(self, constraint: Constraint) -> None:
        self._grammar.check(constraint)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenStep | BaseException] = asyncio.Queue()

        def emit(item: TokenStep | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        seq = self._batcher.new_sequence(prompt_ids, params, emit, adapter)
        self._batcher.submit(seq)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._batcher.cancel(seq)  # frees its place in line now, its slot before next step

    async def prompt_logprobs(
        self, prompt_ids: Sequence[int], top: int, adapter: str | None = None
    ) -> list[TokenLogprob]:
        ids = list(prompt_ids)
        future = self._batcher.call(lambda: self._score(ids, top, adapter))
        return await asyncio.wrap_future(future)

    def _score(self, ids: list[int], top: int, adapter: str | None) -> list[TokenLogprob]:
        import torch

        inputs = torch.tensor([ids], device=self._device)
        extra = {"adapter_names": [adapter or "__base__"]} if self._adapters else {}
        logits = self._model(input_ids=inputs, **extra).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        entries = [TokenLogprob(self._texts(ids[0]), None, (), ids[0])] if ids else []
        for position, token in enumerate(ids[1:]):
            entries.append(logprob_entry(logprobs[position], token, top, self._texts))
        return entries

    async def load_adapter(self, name: str, path: str) -> None:
        if not self._adapter_loading:
            raise InvalidRequestError(
                "this server loads no adapters at run time: start it with --enable-lora",
                param="lora_path",
            )
        check_adapter_dir(name, path)
        await asyncio.wrap_future(self._batcher.call(lambda: self._add_adapter(name, path)))

    async def unload_adapter(self, name: str) -> None:
        await asyncio.wrap_future(self._batcher.call(lambda: self._remove_adapter(name)))

    def _add_adapter(self, name: str, path: str) -> None:
        """On the batcher thread, between steps: wrap the model the first time, then add."""
        from peft import PeftModel

        try:
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(path, adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name)
                self._model.eval()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise InvalidRequestError(
                f"cannot load LoRA adapter '{name}' from {path}: {exc}", param="lora_path"
            ) from None
        self._adapters = (*self._adapters, name)
        self._batcher.swap_model(self._model, use_adapters=True)

    def _remove_adapter(self, name: str) -> None:
        """On the batcher thread: delete it; with the last one gone, unwrap the base model."""
        remaining = tuple(a for a in self._adapters if a != name)
        if remaining:
            self._model.delete_adapter(name)
            self._model.set_adapter(remaining[0])
        else:
            self._model = self._model.unload()  # removes the LoRA layers, merges nothing
        self._adapters = remaining
        self._batcher.swap_model(self._model, use_adapters=bool(remaining))

    def load(self) -> EngineLoad:
        return self._batcher.load()

    def close(self) -> None:
        self._batcher.close()


class EngineLikelihoodScorer:
    """`ResponseScorer`: the model's own mean token log-likelihood of the response (and EOS)."""

    def __init__(self, engine: TransformersInferenceEngine) -> None:
        self._engine = engine

    async def score(self, prompt: Sequence[Message], response: str) -> float:
        prompt_ids = self._engine.render_chat(prompt)
        response_ids = [*self._engine.tokenize(response), self._engine.eos_token_id]
        entries = await self._engine.prompt_logprobs(prompt_ids + response_ids, 0)
        tail = [e.logprob for e in entries[len(prompt_ids) :] if e.logprob is not None]
        return sum(tail) / len(tail)


def check_adapter_dir(name: str, path: str) -> None:
    """`InvalidRequestError` unless `path` is a directory with a PEFT `adapter_config.json`."""
    if not (Path(path) / "adapter_config.json").is_file():
        raise InvalidRequestError(
            f"LoRA adapter '{name}': no adapter_config.json in {path}", param="lora_path"
        )


def _load(
    model_dir: str,
    dtype_name: str,
    device: str,
    adapters: Mapping[str, str],
    batch_hint: int,
    adapter_loading: bool = False,
) -> tuple[Any, int, int]:
    """The model ready to serve, and how many linears were prepacked and modules fused."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype_name))
    if device == "cpu":
        _use_serving_attention(model)
    if adapters:
        model = _with_adapters(model, adapters)
    model = model.to(device)
    model.eval()
    prepacked = fused = 0
    quantized = getattr(model.config, "quantization_config", None) is not None
    # AWQ/GPTQ keep their kernels; adapters loaded later need plain linears for PEFT to wrap
    if can_prepack(model.dtype, device) and not quantized and not adapter_loading:
        fused = 0 if adapters else fuse_projections(model)
        kernels = {"gemv": cpu_kernels.gemv_ops(), "tiles": cpu_kernels.tile_ops()}
        prepacked = prepack_linears(model, batch_hint=batch_hint, **kernels)
    return model, prepacked, fused


def _use_serving_attention(model: Any) -> None:
    """Masked grouped-query attention without copying K/V (see serving_attention), where the
    model takes a registered attention; otherwise it keeps its own."""
    if model.config._attn_implementation != "sdpa":
        return
    try:
        model.set_attn_implementation(serving_attention.register())
    except (ValueError, NotImplementedError) as exc:  # a model that cannot take it keeps sdpa
        log.info("serving_attention", used=False, reason=str(exc))


def _with_adapters(model: Any, adapters: Mapping[str, str]) -> Any:
    """Wrap `model` with every LoRA adapter loaded under its served name."""
    from peft import PeftModel

    items = list(adapters.items())
    for name, path in items:
        if not (isinstance(path, str) and path):
            raise ConfigError(f"LoRA adapter '{name}' has no path")
    first_name, first_path = items[0]
    try:
        wrapped = PeftModel.from_pretrained(model, first_path, adapter_name=first_name)
        for name, path in items[1:]:
            wrapped.load_adapter(path, adapter_name=name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load LoRA adapter: {exc}") from None
    return wrapped


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
