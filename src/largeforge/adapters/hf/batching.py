"""Continuous batching over a transformers causal LM.

One scheduler thread owns the model. Each iteration it admits waiting sequences (one prefill
each, its KV cache merged into the batch's), then runs one decode step for every running
sequence together: the batch's KV cache is left-padded, with an attention mask and per-row
position ids, so sequences of different lengths, joining and leaving at any step, share every
forward pass. A sequence leaves the batch when it finishes or its consumer goes away.

Admission follows `AdmissionLimits`: a request waits only while every slot is taken. Each
forward pass can be observed (`on_step`): which sequences ran in it, under which adapter.

A sequence with a `constraint` gets a grammar matcher: before its token is chosen, every token
the grammar does not allow next is masked in its row of the logits (one bitmask buffer reused
at every step; rows without a constraint are not touched, and a batch without constrained rows
does no mask work at all). Log-probabilities are still those of the raw logits. A sequence
whose grammar has ended (its stop token accepted) finishes with `stop`, `ignore_eos` or not.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
import torch

from largeforge.adapters.grammar.xgrammar import TokenBitmask, XgrammarGrammarEngine
from largeforge.adapters.hf.sampling import (
    IncrementalDecoder,
    TokenTexts,
    choose_token,
    logprob_entry,
)
from largeforge.application.ports import EngineLoad
from largeforge.domain.admission import AdmissionLimits
from largeforge.domain.errors import EngineFaultError, EngineUnavailableError, InvalidRequestError
from largeforge.domain.generation import FinishReason, SamplingParams, TokenStep

log = structlog.get_logger(__name__)

T = TypeVar("T")

DecodeStep = Callable[..., torch.Tensor]
"""A decode forward without the model's own (`decode_step.LlamaDecodeStep`): called with
`input_ids`, `attention_mask`, `position_ids` and `past_key_values`, returns the logits."""


@dataclass(frozen=True)
class DecodeOutput:
    """What the batcher reads of a decode step's output."""

    logits: torch.Tensor


PREFILL_TOKENS = 4096
"""Most (padded) prompt tokens prefilled in one forward pass."""
Emit = Callable[[TokenStep | BaseException], None]
BASE = "__base__"
"""The adapter name PEFT reads as "no adapter" for a row of a mixed batch."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One row of a forward pass: the sequence's serial number and the adapter it ran under."""

    serial: int
    adapter: str | None


@dataclass(frozen=True, slots=True)
class BatchStep:
    """One forward pass of the model: `prefill` (new prompts) or `decode` (one token each)."""

    phase: str
    rows: tuple[BatchRow, ...]

    @property
    def serials(self) -> tuple[int, ...]:
        return tuple(row.serial for row in self.rows)


StepHook = Callable[[BatchStep], None]
"""Called on the scheduler thread after each forward pass; it must be quick and not raise."""


@dataclass(eq=False)
class Generating:
    """One sequence being generated (a choice of a request); `serial` counts from 0 per engine."""

    prompt: Sequence[int]
    params: SamplingParams
    emit: Emit
    decoder: IncrementalDecoder
    adapter: str | None = None
    serial: int = 0
    released: bool = False
    cancelled: bool = False
    generated: int = 0
    length: int = 0  # tokens in the KV cache = position of the next token fed
    last: int = -1
    counts: torch.Tensor | None = None
    generator: torch.Generator | None = None
    matcher: Any = None  # an xgrammar GrammarMatcher when params.constraint is set
    done: bool = False
    waiting_since: float = field(default=0.0)


class ContinuousBatcher:
    """Schedules sequences onto one model; thread-safe `submit`, results through `emit`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_ids: Sequence[int],
        device: str,
        max_num_seqs: int = 16,
        max_queue: int = 256,
        use_adapters: bool = False,
        on_step: StepHook | None = None,
        grammar: XgrammarGrammarEngine | None = None,
        decode_step: DecodeStep | None = None,
    ) -> None:
        self._model = model
        self._decode_step = decode_step
        self._tokenizer = tokenizer
        self._eos = frozenset(eos_ids)
        self._device = device
        self._max_num_seqs = max_num_seqs
        self._limits = AdmissionLimits(max_num_seqs, max_queue)
        self._use_adapters = use_adapters
        self._on_step = on_step
        self._grammar = grammar
        self._bitmask: TokenBitmask | None = None  # allocated at the first constrained step
        self._serials = 0
        self._in_flight = 0  # admitted and not yet released: waiting, being prefilled, running
        self._texts = TokenTexts(tokenizer)
        self._waiting: deque[Generating] = deque()
        self._jobs: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._running: list[Generating] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="largeforge-batcher", daemon=True)
        self._thread.start()

    # -- called from other threads ----------------------------------------------------------

    def new_sequence(
        self, prompt: Sequence[int], params: SamplingParams, emit: Emit, adapter: str | None
    ) -> Generating:
        matcher = None
        if params.constraint is not None:
            if self._grammar is None:
                raise InvalidRequestError("this engine cannot constrain its output")
            matcher = self._grammar.matcher(params.constraint)
        decoder = IncrementalDecoder(self._tokenizer)
        with self._cond:
            seq = Generating(list(prompt), params, emit, decoder, adapter, self._serials)
            self._serials += 1
        seq.matcher = matcher
        if params.seed is not None:
            seq.generator = torch.Generator(device=self._device).manual_seed(params.seed % 2**63)
        return seq

    def submit(self, seq: Generating) -> None:
        """Queue `seq` for the next step.

        Raises `EngineOverloadedError` when every slot is taken and the waiting line is full,
        `EngineUnavailableError` once the engine is shutting down.
        """
        with self._cond:
            if self._closed:
                raise EngineUnavailableError("the engine is shutting down; retry on another server")
            self._limits.admit(self._in_flight)
            self._in_flight += 1
            self._waiting.append(seq)
            self._cond.notify()

    def cancel(self, seq: Generating) -> None:
        """Its consumer left: a waiting `seq` leaves the line now, a running one before the
        next step."""
        with self._cond:
            seq.cancelled = True
            if seq in self._waiting:  # Generating compares by identity
                self._waiting.remove(seq)
                self._release_locked([seq])

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the scheduler thread between two steps (it owns the model)."""
        future: Future[T] = Future()
        with self._cond:
            self._jobs.append((fn, future))
            self._cond.notify()
        return future

    def swap_model(self, model: Any, use_adapters: bool) -> None:
        """Generate with `model` from the next step on (call it from a `call` job: the same
        weights, wrapped or unwrapped by PEFT, so the sequences' caches stay valid)."""
        self._model = model
        self._use_adapters = use_adapters
        self._decode_step = None  # the flat decode step knows only the unwrapped model

    def load(self) -> EngineLoad:
        """Admitted sequences split as `AdmissionLimits` counts them (running, waiting)."""
        with self._cond:
            in_flight = self._in_flight
        return EngineLoad(self._limits.waiting(in_flight), self._limits.running(in_flight))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # -- the scheduler thread ---------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closed or self._waiting or self._jobs or self._running):
                        self._cond.wait()
                    if self._closed:
                        break
                    jobs = list(self._jobs)
                    self._jobs.clear()
                    room = self._max_num_seqs - len(self._running)
                    admitted = [
                        self._waiting.popleft() for _ in range(min(room, len(self._waiting)))
                    ]
                for fn, future in jobs:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn())
                        except BaseException as exc:
                            future.set_exception(exc)
                try:
                    self._drop([s for s in self._running if s.cancelled])
                    live = [s for s in admitted if not s.cancelled]
                    self._release([s for s in admitted if s.cancelled])
                    if live:
                        self._prefill(live)
                    if self._running:
                        self._decode()
                except Exception as exc:
                    log.exception("engine_step_failed")
                    failed = [*self._running, *admitted]
                    for seq in failed:
                        if not seq.done:
                            seq.emit(exc)
                    self._release(failed)
                    self._running, self._cache, self._mask = [], None, None
        self._shutdown()

    def _release(self, seqs: Sequence[Generating]) -> None:
        """Give back the admission slots of sequences that left the engine (once each)."""
        with self._cond:
            self._release_locked(seqs)

    def _release_locked(self, seqs: Sequence[Generating]) -> None:
        for seq in seqs:
            if not seq.released:
                seq.released = True
                self._in_flight -= 1

    def _shutdown(self) -> None:
        error = EngineUnavailableError("the engine was shut down; retry on another server")
        for seq in [*self._running, *self._waiting]:
            seq.emit(error)
        for _fn, future in self._jobs:
            future.cancel()

    def _forward(self, phase: str, seqs: Sequence[Generating], **inputs: Any) -> Any:
        if self._use_adapters:
            inputs["adapter_names"] = [s.adapter or BASE for s in seqs]
        if phase == "decode" and self._decode_step is not None:
            out = DecodeOutput(self._decode_step(**inputs))
        else:
            out = self._model(**inputs, use_cache=True, logits_to_keep=1)
        if self._on_step is not None:  # the adapter each row ran under: the names passed above
            adapters = inputs.get("adapter_names", [BASE] * len(seqs))
            rows = tuple(
                BatchRow(s.serial, None if name == BASE else name)
                for s, name in zip(seqs, adapters, strict=True)
            )
            self._on_step(BatchStep(phase, rows))
        return out

    def _prefill(self, seqs: list[Generating]) -> None:
        """Run the prompts of newly admitted sequences, left-padded in batches, and join them."""
        group: list[Generating] = []
        for seq in sorted(seqs, key=lambda s: len(s.prompt)):
            width = len(seq.prompt)
            if group and width * (len(group) + 1) > PREFILL_TOKENS:
                self._prefill_group(group)
                group = []
            group.append(seq)
        if group:
            self._prefill_group(group)

    def _prefill_group(self, seqs: list[Generating]) -> None:
        from transformers import DynamicCache

        width = max(len(s.prompt) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        positions = torch.zeros(len(seqs), width, dtype=torch.long)
        for row, seq in enumerate(seqs):
            size = len(seq.prompt)
            ids[row, width - size :] = torch.tensor(list(seq.prompt))
            mask[row, width - size :] = 1
            positions[row, width - size :] = torch.arange(size)
            seq.length = size
        inputs: dict[str, Any] = {"input_ids": ids.to(self._device)}
        if len(seqs) > 1:  # one prompt needs neither mask nor positions
            inputs.update(
                attention_mask=mask.to(self._device), position_ids=positions.to(self._device)
            )
        out = self._forward("prefill", seqs, **inputs, past_key_values=DynamicCache())
        self._join(seqs, out.past_key_values, mask.to(self._device))
        self._advance(seqs, out.logits[:, -1, :].float())

    def _decode(self) -> None:
        seqs = self._running
        assert self._mask is not None
        ids = torch.tensor([[s.last] for s in seqs], device=self._device)
        positions = torch.tensor([[s.length] for s in seqs], device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(seqs), 1)], dim=1)
        # Without padding the mask is all ones: leaving it out skips building a 4-D mask per
        # step (a fifth of a batch-1 step on a CPU).
        padded = bool((self._mask == 0).any())
        out = self._forward(
            "decode",
            seqs,
            input_ids=ids,
            attention_mask=self._mask if padded else None,
            position_ids=positions,
            past_key_values=self._cache,
        )
        for s in seqs:
            s.length += 1
        self._advance(list(seqs), out.logits[:, -1, :].float())

    def _advance(self, seqs: list[Generating], logits: torch.Tensor) -> None:
        """Pick each sequence's next token, report it, and retire finished sequences."""
        plain = [
            not s.params.penalized and s.params.greedy and s.params.logprobs is None for s in seqs
        ]
        scores = self._masked(seqs, logits)
        # `max`'s indices are argmax's (the first of equal maxima) at a third of its time on
        # a CPU (16 x 49152 logits: 0.18 against 0.56 ms a step).
        argmax = torch.max(scores, dim=-1).indices.tolist() if any(plain) else []
        finished = []
        for row, seq in enumerate(seqs):
            if plain[row]:
                token = int(argmax[row])
            else:
                token = choose_token(scores[row], seq.params, seq.counts, seq.generator)
            if seq.matcher is not None and not seq.matcher.accept_token(token):
                seq.done = True
                finished.append(seq)
                self._release([seq])  # its slot is free before its consumer hears of it
                seq.emit(EngineFaultError(f"the grammar refused token {token} it had allowed"))
                continue
            entry = None
            if seq.params.logprobs is not None:
                logprobs = torch.log_softmax(logits[row], dim=-1)
                entry = logprob_entry(logprobs, token, seq.params.logprobs, self._texts)
            if seq.params.penalized:
                if seq.counts is None:
                    seq.counts = torch.zeros(logits.shape[-1], device=logits.device)
                seq.counts[token] += 1
            seq.generated += 1
            seq.last = token
            finish = None
            ended = seq.matcher is not None and seq.matcher.is_terminated()
            if ended or (token in self._eos and not seq.params.ignore_eos):
                finish, text = FinishReason.STOP, seq.decoder.flush()
            else:
                text = seq.decoder.push(token)
                if seq.generated >= (seq.params.max_tokens or 1):
                    finish = FinishReason.LENGTH
                    text += seq.decoder.flush()
            if finish is not None:
                seq.done = True
                finished.append(seq)
                self._release([seq])  # its slot is free before its consumer sees the end
            seq.emit(TokenStep(token, text, entry, finish))
        self._drop(finished)

    def _masked(self, seqs: list[Generating], logits: torch.Tensor) -> torch.Tensor:
        """`logits` with each constrained row masked to what its grammar allows next.

        Masks in place unless a constrained row reports log-probabilities (those come from the
        raw logits); without constrained rows, `logits` itself, untouched.
        """
        matchers = [(row, s.matcher) for row, s in enumerate(seqs) if s.matcher is not None]
        if not matchers:
            return logits
        assert self._grammar is not None
        if self._bitmask is None or self._bitmask.rows < len(seqs):
            rows = max(len(seqs), self._max_num_seqs)
            self._bitmask = self._grammar.bitmask(rows, self._device)
        if any(seqs[row].params.logprobs is not None for row, _ in matchers):
            logits = logits.clone()
        self._bitmask.apply(logits, matchers)
        return logits

    # -- the batch's KV cache ---------------------------------------------------------------

    def _join(self, seqs: list[Generating], cache: Any, mask: torch.Tensor) -> None:
        """Add prefilled sequences' cache to the batch (left-padding the shorter side)."""
        if self._cache is None or self._mask is None:
            self._cache, self._mask, self._running = cache, mask, list(seqs)
            self._regrow()
            return
        width, length = self._mask.shape[1], mask.shape[1]
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = _concat_left_padded(mine.keys, theirs.keys)
            mine.values = _concat_left_padded(mine.values, theirs.values)
        if length < width:
            mask = torch.cat([mask.new_zeros(mask.shape[0], width - length), mask], dim=1)
        elif width < length:
            pad = self._mask.new_zeros(self._mask.shape[0], length - width)
            self._mask = torch.cat([pad, self._mask], dim=1)
        self._mask = torch.cat([self._mask, mask], dim=0)
        self._running.extend(seqs)
        self._regrow()

    def _drop(self, seqs: Sequence[Generating]) -> None:
        """Remove sequences from the batch and trim padding columns nobody needs any more."""
        if not seqs:
            return
        gone = {id(s) for s in seqs}
        keep = [i for i, s in enumerate(self._running) if id(s) not in gone]
        if len(keep) == len(self._running):
            return
        self._release([s for s in self._running if id(s) in gone])
        if not keep:
            self._running, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None
        index = torch.tensor(keep, device=self._device)
        self._running = [self._running[i] for i in keep]
        mask = self._mask[index]
        first = int(torch.nonzero(mask.any(dim=0))[0])
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]
        self._regrow()

    def _regrow(self) -> None:
        """Move the batch's KV tensors into buffers with room to append (after joins/drops)."""
        self._cache.layers = [_growing_layer(x.keys, x.values) for x in self._cache.layers]


SPARE_POSITIONS = 64
"""Room left at the end of each KV buffer, so decode steps append without copying."""


def _growing_layer(keys: torch.Tensor, values: torch.Tensor) -> Any:
    """A KV cache layer holding `keys`/`values` in buffers with spare room at the end."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[misc]
        """`keys`/`values` are views of larger buffers: appending a token writes in place
        instead of concatenating (copying) the whole cache at every decode step."""

        def adopt(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
            batch, heads, length, dim = keys.shape
            self._k = keys.new_empty((batch, heads, length + spare, dim))
            self._v = values.new_empty((batch, heads, length + spare, values.shape[-1]))
            self._k[:, :, :length] = keys
            self._v[:, :, :length] = values
            self._length = length
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            count = key_states.shape[-2]
            self.reserve(count)
            self._k[:, :, self._length : self._length + count] = key_states
            self._v[:, :, self._length : self._length + count] = value_states
            self.advance(count)
            return self.keys, self.values

        def reserve(self, count: int) -> tuple[torch.Tensor, torch.Tensor, int]:
            """Room for `count` more positions: the key and value buffers, and where the
            next position goes (a writer then calls `advance`)."""
            if self._length + count > self._k.shape[2]:
                self.adopt(self.keys, self.values, max(SPARE_POSITIONS, self._length, count))
            return self._k, self._v, self._length

        def advance(self, count: int) -> None:
            """Count `count` positions written after `reserve` as part of the cache."""
            self._length += count
            self.keys, self.values = self._k[:, :, : self._length], self._v[:, :, : self._length]

    layer = GrowingLayer()
    layer.adopt(keys, values, SPARE_POSITIONS)
    return layer


def _concat_left_padded(batch: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """Stack [B, H, T, D] and [N, H, L, D] along the batch, left-padding the shorter in time."""
    width, length = batch.shape[2], one.shape[2]
    if length < width:
        one = torch.nn.functional.pad(one, (0, 0, width - length, 0))
    elif width < length:
        batch = torch.nn.functional.pad(batch, (0, 0, length - width, 0))
    return torch.cat([batch, one], dim=0)
