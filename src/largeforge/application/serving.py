"""The serving use case: chat and text completions over the loaded engines, by model id.

It owns what every engine shares: picking the engine (and LoRA adapter) for a model id, the
completion budget and overflow policy, `n` choices, stop strings, echo, and exact usage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import structlog

from largeforge.application.adapter_leases import AdapterLeases
from largeforge.application.ports import EngineLoad, InferenceEngine, ToolCallFormat
from largeforge.application.tool_replies import (
    ReplySplitter,
    check_output,
    joined_calls,
    output_constraint,
)
from largeforge.domain.datasets import Message
from largeforge.domain.errors import (
    AdapterNotLoadedError,
    InvalidRequestError,
    ModelNotServedError,
)
from largeforge.domain.generation import (
    ChatRequest,
    Choice,
    ChoiceDelta,
    Completion,
    FinishReason,
    OverflowPolicy,
    SamplingParams,
    TextRequest,
    TokenLogprob,
    ToolCallDelta,
    Usage,
    completion_budget,
)
from largeforge.domain.stops import StopMatcher
from largeforge.domain.tools import Constraint, ToolSpec

log = structlog.get_logger(__name__)

StreamEvent = ChoiceDelta | Usage
"""What a stream yields: pieces of choices, then (last) the request's usage."""

Hook = Callable[[], None] | None
"""Called once, when the first generated token arrives (for time-to-first-token metrics)."""

ToolFormats = Callable[[str], ToolCallFormat]
"""The tool-call format of a name (`hermes`, `llama3_json`, ...)."""


@dataclass
class _Tally:
    completion_tokens: int = 0
    finished: dict[int, FinishReason] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Prepared:
    engine: InferenceEngine
    adapter: str | None
    prompt_ids: tuple[int, ...]
    params: SamplingParams
    n: int
    tool_format: ToolCallFormat | None = None
    tools: frozenset[str] = frozenset()
    check: tuple[Constraint, str] | None = None  # the output grammar and the param it came from


class TextGeneration:
    """Answers chat and completion requests with the served engines, addressed by model id."""

    def __init__(
        self,
        engines: Sequence[InferenceEngine],
        overflow: OverflowPolicy = OverflowPolicy.REJECT,
        tool_formats: ToolFormats | None = None,
        tool_call_parser: str | None = None,
        tool_grammar: bool = True,
        unload_timeout_s: float = 600.0,
    ) -> None:
        """`tool_grammar=False` leaves answers offered tools unconstrained: the tools are still
        in the prompt and calls are still parsed out of the text, but nothing forces them to be
        valid (for measuring a model's own call validity; the server always constrains)."""
        self._engines = tuple(engines)
        self._tool_grammar = tool_grammar
        self._overflow = overflow
        self._tool_formats = tool_formats
        self._tool_call_parser = tool_call_parser
        self._unload_timeout_s = unload_timeout_s
        self._leases = AdapterLeases()
        self._loading: set[str] = set()
        self._routes: dict[str, tuple[InferenceEngine, str | None]] = {}
        for engine in self._engines:
            self._routes[engine.model_id] = (engine, None)
            for adapter in engine.adapters:
                self._routes[adapter] = (engine, adapter)

    def models(self) -> tuple[str, ...]:
        """Every model id served: each engine's base model, then its adapters."""
        return tuple(self._routes)

    def base_of(self, model: str) -> str | None:
        """The base model id under an adapter id (None for a base model)."""
        engine, adapter = self._route(model)
        return engine.model_id if adapter else None

    async def load_adapter(self, name: str, path: str, base: str | None = None) -> None:
        """Serve the LoRA adapter at `path` as model id `name` on `base` (default: the only
        engine) at once. `InvalidRequestError` when the name is taken or the engine refuses."""
        if name in self._routes or name in self._loading:
            raise InvalidRequestError(
                f"The lora adapter '{name}' has already been loaded.", param="lora_name"
            )
        engine = self._engine_named(base)
        self._loading.add(name)
        try:
            await engine.load_adapter(name, path)
        finally:
            self._loading.discard(name)
        self._routes[name] = (engine, name)
        log.info("adapter_loaded", adapter=name, path=path, base=engine.model_id)

    async def unload_adapter(self, name: str) -> None:
        """Stop serving adapter `name`: new requests for it are refused at once (404), the
        requests already generating with it finish, then the engine frees it."""
        route = self._routes.get(name)
        if route is None or route[1] is None:
            raise AdapterNotLoadedError(name)
        del self._routes[name]
        running = self._leases.held(name)
        if not await self._leases.drained(name, self._unload_timeout_s):
            log.warning(
                "adapter_unload_timeout", adapter=name, still_running=self._leases.held(name)
            )
        await route[0].unload_adapter(name)
        log.info("adapter_unloaded", adapter=name, waited_for=running)

    def _engine_named(self, base: str | None) -> InferenceEngine:
        if base is None:
            if len(self._engines) == 1:
                return self._engines[0]
            names = ", ".join(e.model_id for e in self._engines)
            raise InvalidRequestError(
                f"name the base model of the adapter: one of {names}", param="base_model_name"
            )
        for engine in self._engines:
            if engine.model_id == base:
                return engine
        raise ModelNotServedError(base, tuple(e.model_id for e in self._engines))

    @contextlib.contextmanager
    def _lease(self, prepared: _Prepared) -> Iterator[None]:
        """Hold the request's adapter while it runs; refuse it if the adapter was unloaded
        since the request was prepared (before anything was sent)."""
        adapter = prepared.adapter
        if adapter is None:
            yield
            return
        if adapter not in self._routes:
            raise ModelNotServedError(adapter, self.models())
        self._leases.take(adapter)
        try:
            yield
        finally:
            self._leases.give_back(adapter)

    def tool_calling(self) -> dict[str, dict[str, str]]:
        """Per base model: the tool-call format in use and how tools reach the prompt."""
        return {
            engine.model_id: {
                "format": self._tool_call_parser or engine.tool_format,
                "prompt": "chat template" if engine.native_tools else "fallback system block",
            }
            for engine in self._engines
        }

    def load(self) -> EngineLoad:
        """Waiting and running sequences summed over the engines."""
        loads = [engine.load() for engine in self._engines]
        return EngineLoad(sum(x.waiting for x in loads), sum(x.running for x in loads))

    async def chat(self, request: ChatRequest, on_first_token: Hook = None) -> Completion:
        """The assistant's replies to `request.messages` (`request.n` choices)."""
        prepared = self._prepare_chat(request)
        return await _collect(self._stream(prepared, "", on_first_token), prepared)

    def stream_chat(
        self, request: ChatRequest, on_first_token: Hook = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream the replies; validation errors are raised here, before anything is sent."""
        return self._stream(self._prepare_chat(request), "", on_first_token)

    async def complete(self, request: TextRequest, on_first_token: Hook = None) -> Completion:
        """Continue `request.prompt`; with `echo` the prompt is returned too (and its logprobs)."""
        prepared = self._prepare_text(request)
        prompt_logprobs: tuple[TokenLogprob, ...] = ()
        if request.echo and prepared.params.logprobs is not None:
            engine, adapter = prepared.engine, prepared.adapter
            with self._lease(prepared):
                prompt_logprobs = tuple(
                    await engine.prompt_logprobs(
                        prepared.prompt_ids, prepared.params.logprobs, adapter
                    )
                )
        echo = _prompt_text(request, prepared) if request.echo else ""
        completion = await _collect(self._stream(prepared, echo, on_first_token), prepared)
        if not request.echo or prepared.params.logprobs is None:
            return completion
        choices = tuple(
            Choice(c.index, c.text, c.finish_reason, c.logprobs, prompt_logprobs)
            for c in completion.choices
        )
        return Completion(choices, completion.usage)

    def stream_complete(
        self, request: TextRequest, on_first_token: Hook = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream the continuation (after the prompt, with `echo`)."""
        prepared = self._prepare_text(request)
        echo = _prompt_text(request, prepared) if request.echo else ""
        return self._stream(prepared, echo, on_first_token)

    def close(self) -> None:
        for engine in self._engines:
            engine.close()

    # -- preparation ------------------------------------------------------------------------

    def _route(self, model: str) -> tuple[InferenceEngine, str | None]:
        try:
            return self._routes[model]
        except KeyError:
            raise ModelNotServedError(model, self.models()) from None

    def _prepare_chat(self, request: ChatRequest) -> _Prepared:
        engine, adapter = self._route(request.model)
        tools = request.tools if request.uses_tools else ()
        tool_format = self._tool_format(engine) if tools else None
        output = (
            output_constraint(request, tool_format) if self._tool_grammar or not tools else None
        )
        ids = tuple(engine.render_chat(request.messages, tools))
        params = replace(request.params, constraint=output[0] if output else None)
        prepared = self._budgeted(engine, adapter, ids, params, request.n, "messages")
        names = frozenset(tool.name for tool in tools)
        return replace(prepared, tool_format=tool_format, tools=names, check=output)

    def _tool_format(self, engine: InferenceEngine) -> ToolCallFormat:
        if self._tool_formats is None:
            raise InvalidRequestError(
                "tool calling is not configured on this server", param="tools"
            )
        return self._tool_formats(self._tool_call_parser or engine.tool_format)

    def _prepare_text(self, request: TextRequest) -> _Prepared:
        engine, adapter = self._route(request.model)
        prompt = request.prompt
        ids = tuple(engine.tokenize(prompt)) if isinstance(prompt, str) else tuple(prompt)
        if not ids:
            raise InvalidRequestError("the prompt has no tokens", param="prompt")
        if any(not 0 <= i < engine.vocab_size for i in ids):
            raise InvalidRequestError(
                f"prompt token ids must be in [0, {engine.vocab_size})", param="prompt"
            )
        return self._budgeted(engine, adapter, ids, request.params, request.n, "prompt")

    def _budgeted(
        self,
        engine: InferenceEngine,
        adapter: str | None,
        ids: tuple[int, ...],
        params: SamplingParams,
        n: int,
        param: str,
    ) -> _Prepared:
        budget = completion_budget(params, len(ids), engine.context_window, self._overflow, param)
        resolved = replace(params, max_tokens=budget)
        return _Prepared(engine, adapter, ids, resolved, n)

    # -- generation -------------------------------------------------------------------------

    async def _stream(
        self, prepared: _Prepared, echo_text: str, on_first_token: Hook
    ) -> AsyncGenerator[StreamEvent, None]:
        tally = _Tally()
        with self._lease(prepared):
            if prepared.check is not None:  # compiles (or finds cached) off the event loop
                await asyncio.to_thread(check_output, prepared.engine, *prepared.check)
            if echo_text:
                for index in range(prepared.n):
                    yield ChoiceDelta(index, echo_text)
            deltas = _choice(prepared, 0, tally) if prepared.n == 1 else _merged(prepared, tally)
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if on_first_token is not None:
                        on_first_token()
                        on_first_token = None
                    yield delta
        yield Usage(len(prepared.prompt_ids), tally.completion_tokens)

    # -- tokens (`/tokenize`, `/detokenize`) ------------------------------------------------

    def tokenize(
        self, model: str, text: str, *, add_special_tokens: bool = False, strings: bool = False
    ) -> Tokenized:
        """`text` in `model`'s tokens. Without `add_special_tokens` these are the ids a
        completion of the prompt `text` starts from (and counts as its prompt tokens)."""
        engine, _adapter = self._route(model)
        return _tokenized(engine, engine.tokenize(text, add_special_tokens), strings)

    def render(
        self,
        model: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        strings: bool = False,
    ) -> Tokenized:
        """The prompt ids a chat completion of `messages` (offering `tools`) starts from: the
        chat template with its generation prompt."""
        engine, _adapter = self._route(model)
        return _tokenized(engine, engine.render_chat(messages, tools), strings)

    def detokenize(self, model: str, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens included (so a rendered prompt reads back whole)."""
        engine, _adapter = self._route(model)
        if any(not 0 <= i < engine.vocab_size for i in ids):
            raise InvalidRequestError(
                f"token ids must be in [0, {engine.vocab_size})", param="tokens"
            )
        return engine.decode(ids, skip_special_tokens=False)


async def _choice(
    prepared: _Prepared, index: int, tally: _Tally
) -> AsyncGenerator[ChoiceDelta, None]:
    """One choice: engine steps through the stop matcher; ends with a `finish_reason` delta."""
    params = prepared.params.for_choice(index)
    matcher = StopMatcher(params.stop)
    split = None
    if prepared.tool_format is not None:
        split = ReplySplitter(prepared.tool_format, prepared.tools)
    finish = FinishReason.LENGTH
    pending: list[TokenLogprob] = []
    text = ""
    calls: list[ToolCallDelta] = []
    steps = prepared.engine.generate(prepared.prompt_ids, params, prepared.adapter)
    async with contextlib.aclosing(steps):  # leaving early frees the engine's slot now
        async for step in steps:
            tally.completion_tokens += 1
            if step.logprob is not None:
                pending.append(step.logprob)
            if split is None:
                text += matcher.feed(step.text)
            else:  # stop strings apply to the content, never inside a call
                content, pieces = split.feed(step.text)
                text += matcher.feed(content)
                calls.extend(pieces)
            if matcher.stopped:
                finish = FinishReason.STOP
                break
            if step.finish_reason is not None:
                finish = step.finish_reason
                break
            if text or calls:
                yield ChoiceDelta(index, text, tuple(pending), tool_calls=tuple(calls))
                pending, text, calls = [], "", []
    if split is not None and not matcher.stopped:
        tail, more = split.finish()
        text += matcher.feed(tail)
        calls.extend(more)
    text += matcher.flush()
    if split is not None and split.called and finish is FinishReason.STOP:
        finish = FinishReason.TOOL_CALLS
    tally.finished[index] = finish
    yield ChoiceDelta(index, text, tuple(pending), finish, tuple(calls))


async def _merged(prepared: _Prepared, tally: _Tally) -> AsyncGenerator[ChoiceDelta, None]:
    """The `n` choices generated concurrently (the engine batches them), interleaved."""
    queue: asyncio.Queue[ChoiceDelta | BaseException | None] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for delta in _choice(prepared, index, tally):
                await queue.put(delta)
        except BaseException as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(i)) for i in range(prepared.n)]
    try:
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect(stream: AsyncGenerator[StreamEvent, None], prepared: _Prepared) -> Completion:
    texts: dict[int, list[str]] = {i: [] for i in range(prepared.n)}
    logprobs: dict[int, list[TokenLogprob]] = {i: [] for i in range(prepared.n)}
    calls: dict[int, list[ToolCallDelta]] = {i: [] for i in range(prepared.n)}
    finish: dict[int, FinishReason] = {}
    usage = Usage(len(prepared.prompt_ids), 0)
    async for event in stream:
        if isinstance(event, Usage):
            usage = event
            continue
        texts[event.index].append(event.text)
        logprobs[event.index].extend(event.logprobs)
        calls[event.index].extend(event.tool_calls)
        if event.finish_reason is not None:
            finish[event.index] = event.finish_reason
    want_logprobs = prepared.params.logprobs is not None
    choices = tuple(
        Choice(
            index=i,
            text="".join(texts[i]),
            finish_reason=finish.get(i, FinishReason.LENGTH),
            logprobs=tuple(logprobs[i]) if want_logprobs else None,
            tool_calls=joined_calls(calls[i]),
        )
        for i in range(prepared.n)
    )
    return Completion(choices, usage)


def _prompt_text(request: TextRequest, prepared: _Prepared) -> str:
    """The prompt as text (token-id prompts are decoded) for `echo`."""
    if isinstance(request.prompt, str):
        return request.prompt
    return prepared.engine.decode(prepared.prompt_ids)


async def chat_once(
    engine: InferenceEngine, messages: Sequence[Message], params: SamplingParams
) -> Completion:
    """One chat completion straight from an engine (for use cases that generate data)."""
    request = ChatRequest(engine.model_id, tuple(messages), params)
    return await TextGeneration([engine]).chat(request)


@dataclass(frozen=True, slots=True)
class Tokenized:
    """Token ids of a text or a rendered conversation, for `/tokenize`."""

    ids: tuple[int, ...]
    context_window: int
    strings: tuple[str, ...] | None = None  # each id's vocabulary entry, when asked for


def _tokenized(engine: InferenceEngine, ids: Sequence[int], strings: bool) -> Tokenized:
    pieces = tuple(engine.token_strings(ids)) if strings else None
    return Tokenized(tuple(ids), engine.context_window, pieces)
