"""RouterService: route OpenAI requests to the right expert, pick a replica, fail over.

The request bodies are forwarded as they are (with the replica's model id), so the experts
validate them exactly as they would without the router.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from largeforge.application.classifiers import QueryClassifier
from largeforge.application.experts import ExpertManager, ReplicaHandle
from largeforge.domain.affinity import SessionPins
from largeforge.domain.errors import (
    ConfigError,
    InvalidRequestError,
    ModelNotServedError,
    NoReplicaAvailableError,
    ReplicaError,
)
from largeforge.domain.load_balancing import BalancingStrategy, choose_replica
from largeforge.domain.routing import (
    Expert,
    ReplicaSpec,
    RouteDecision,
    RouteStage,
    RoutingPolicy,
    query_text,
)

log = structlog.get_logger(__name__)

Chunks = AsyncGenerator[dict[str, Any], None]
R = TypeVar("R")


@dataclass(frozen=True)
class Routed:
    """Where a request went: the decision, the expert and replica that answered, the tries."""

    decision: RouteDecision
    expert: str
    replica: str
    attempts: int
    moved_from: str | None = None  # the replica the session was pinned to, when it moved

    @property
    def fallback(self) -> bool:
        return self.expert != self.decision.expert


class RouterService:
    """Routes a request: classify (or take the named expert), then try replicas in order.

    Order of tries: the chosen expert's replicas as the strategy picks them, then the default
    expert's. A replica error before the first token moves on to the next replica; a refusal of
    the request itself (4xx other than 408/429) goes back to the client unchanged. When no
    replica admits a request, it waits up to `max_wait_s` for a breaker to half-open.
    """

    def __init__(
        self,
        name: str,
        classifier: QueryClassifier,
        manager: ExpertManager,
        strategy: BalancingStrategy,
        *,
        max_wait_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pins: SessionPins | None = None,
        classifier_for: Callable[[RoutingPolicy], QueryClassifier] | None = None,
    ) -> None:
        """`pins` turns session affinity on: a request with a session key goes to the replica
        its session is pinned to while that replica admits it. `classifier_for` builds the
        classifier again when experts are added or removed at run time."""
        self.name = name
        self.pins = pins
        self._classifier_for = classifier_for
        self.classifier = classifier
        self.manager = manager
        self.strategy = strategy
        self._max_wait = max_wait_s
        self._clock = clock
        self._sleep = sleep

    def models(self) -> tuple[str, ...]:
        """Model ids clients may send: the router's name, then every expert by name."""
        return (self.name, *self.manager.experts)

    def decide(self, model: str, messages: Sequence[tuple[str, str]]) -> RouteDecision:
        """The route for a request to `model` with (role, text) messages."""
        if model in self.manager.experts:
            return RouteDecision(model, RouteStage.EXPLICIT, {}, f"the client asked for {model}")
        if model != self.name:
            raise ModelNotServedError(model, self.models())
        return self.classifier.classify(query_text(messages, self.manager.policy.route_on))

    def health(self) -> tuple[bool, dict[str, int]]:
        """Whether some replica of the default expert is healthy, and healthy replicas by expert."""
        healthy = {
            e: sum(h.state.healthy for h in self.manager.replicas(e)) for e in self.manager.experts
        }
        return healthy[self.manager.policy.default_expert] > 0, healthy

    def describe(self) -> dict[str, Any]:
        """The router, its classifier and strategy, and every expert's replicas' state."""
        return {
            "router": self.name,
            "classifier": self.classifier.name,
            "strategy": self.strategy.name,
            "default_expert": self.manager.policy.default_expert,
            "experts": self.manager.describe(),
        }

    def replicas(self) -> list[ReplicaHandle]:
        """Every replica of every expert (a snapshot)."""
        return [h for e in self.manager.experts for h in self.manager.replicas(e)]

    def add_replica(self, expert: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Admin: send the expert's traffic to a new remote replica too (`url`, and optionally
        `name`, `model`, `weight`, `api_key`). Raises `InvalidRequestError` for a bad one."""
        try:
            index = len(self.manager.replicas(expert)) + 1
            spec = ReplicaSpec(
                name=str(fields.get("name") or f"{expert}-{index}"),
                url=fields.get("url"),
                local=None,
                model=fields.get("model"),
                weight=float(fields.get("weight", 1.0)),
                api_key=fields.get("api_key"),
            )
            return self.manager.add_replica(expert, spec).describe()
        except (ConfigError, TypeError, ValueError) as exc:
            raise InvalidRequestError(str(exc)) from None

    async def add_expert(self, expert: Expert) -> dict[str, Any]:
        """Admin: route to a new expert (e.g. a LoRA adapter a server loaded at run time: a
        replica whose `model` is the adapter's id). Its keywords and examples join the
        classifier, which is built again off the event loop."""
        if expert.name == self.name:
            raise ConfigError(f"'{expert.name}' is the router's own name")
        self.manager.add_expert(expert)
        try:
            await self._reclassify()
        except BaseException:
            await self.manager.remove_expert(expert.name)
            raise
        return next(e for e in self.manager.describe() if e["name"] == expert.name)

    async def remove_expert(self, name: str) -> None:
        """Admin: stop routing to an expert; its requests in flight finish first."""
        await self.manager.remove_expert(name)
        await self._reclassify()

    async def _reclassify(self) -> None:
        if self._classifier_for is None:
            raise ConfigError("this router cannot change its experts at run time")
        self.classifier = await asyncio.to_thread(self._classifier_for, self.manager.policy)

    def drain(self, expert: str, name: str, draining: bool = True) -> dict[str, Any]:
        """Admin: stop (or resume) new requests to a replica. `ConfigError` when unknown."""
        return self.manager.drain(expert, name, draining).describe()

    async def remove_replica(self, expert: str, name: str) -> None:
        """Admin: drain a replica, wait for its requests in flight, forget it."""
        self.manager.find(expert, name)
        await self.manager.remove_replica(expert, name)

    async def check_health(self) -> None:
        """Check every replica once."""
        await self.manager.check_health()

    async def run_health_checks(self, interval_s: float) -> None:
        """Check every replica each `interval_s` until cancelled."""
        await self.manager.run_health_checks(interval_s)

    async def aclose(self) -> None:
        """Close every replica's client."""
        await self.manager.aclose()

    async def post(
        self,
        path: str,
        body: Mapping[str, Any],
        decision: RouteDecision,
        session: str | None = None,
        fallback: bool = True,
    ) -> tuple[Routed, dict[str, Any]]:
        """A non-streamed request, failing over until a replica answers (of the default
        expert too, unless `fallback` is False)."""

        async def call(handle: ReplicaHandle) -> dict[str, Any]:
            return await handle.client.post(path, await _retarget(body, handle))

        routed, attempt, payload = await self._first_answer(decision, call, session, fallback)
        attempt.close(None)
        payload["model"] = routed.expert
        return routed, payload

    async def stream(
        self,
        path: str,
        body: Mapping[str, Any],
        decision: RouteDecision,
        session: str | None = None,
        fallback: bool = True,
    ) -> tuple[Routed, Chunks]:
        """A streamed request. The first chunk is awaited here, so a replica that fails before
        it is replaced by another; a failure later ends the stream by raising `ReplicaError`."""

        async def call(handle: ReplicaHandle) -> tuple[dict[str, Any] | None, Chunks]:
            chunks = handle.client.stream(path, await _retarget(body, handle))
            try:
                return await anext(chunks, None), chunks
            except BaseException:
                await chunks.aclose()
                raise

        routed, attempt, (first, chunks) = await self._first_answer(
            decision, call, session, fallback
        )
        return routed, _relay(routed.expert, attempt, first, chunks)

    async def _first_answer(
        self,
        decision: RouteDecision,
        call: Callable[[ReplicaHandle], Awaitable[R]],
        session: str | None = None,
        fallback: bool = True,
    ) -> tuple[Routed, ReplicaAttempt, R]:
        """`call` on replicas in order until one answers: a replica error moves on to the next,
        a refusal of the request itself (or a cancellation) is raised. The answering attempt is
        returned open: the caller closes it with the verdict once the answer is complete."""
        tried: set[tuple[str, str]] = set()
        while True:
            expert, handle = await self._admit(decision, tried, session, fallback)
            attempt = ReplicaAttempt(handle, self._clock, self._failed)
            try:
                result = await call(handle)
            except BaseException as exc:
                attempt.close(exc)
                if isinstance(exc, ReplicaError) and not exc.is_client_error:
                    continue
                raise
            moved = self._pin(session, expert, handle.name)
            return Routed(decision, expert, handle.name, len(tried), moved), attempt, result

    def _pin(self, session: str | None, expert: str, replica: str) -> str | None:
        if session is None or self.pins is None:
            return None
        moved = self.pins.pin(session, expert, replica)
        if moved is not None:
            log.warning("session_moved", expert=expert, moved_from=moved, replica=replica)
        return moved

    def _pinned(
        self, session: str | None, expert: str, tried: set[tuple[str, str]]
    ) -> ReplicaHandle | None:
        """The session's replica of `expert`, admitted, when it is untried and admits it."""
        if session is None or self.pins is None:
            return None
        name = self.pins.get(session, expert)
        if name is None or (expert, name) in tried:
            return None
        handle = next((h for h in self.manager.replicas(expert) if h.name == name), None)
        if handle is None or not handle.state.eligible() or not handle.state.breaker.acquire():
            return None
        tried.add((expert, name))
        return handle

    async def _admit(
        self,
        decision: RouteDecision,
        tried: set[tuple[str, str]],
        session: str | None = None,
        fallback: bool = True,
    ) -> tuple[str, ReplicaHandle]:
        """The next replica to try (its breaker slot taken), waiting for one if all are open:
        the session's pinned replica first, then the strategy's pick."""
        pinned = self._pinned(session, decision.expert, tried)
        if pinned is not None:
            return decision.expert, pinned
        order = [decision.expert]
        if fallback and self.manager.policy.default_expert not in order:
            order.append(self.manager.policy.default_expert)
        deadline = self._clock() + self._max_wait
        while True:
            for expert in order:
                handles = {h.name: h for h in self.manager.replicas(expert)}
                exclude = [name for e, name in tried if e == expert]
                picked = choose_replica([h.state for h in handles.values()], self.strategy, exclude)
                if picked is not None:
                    tried.add((expert, picked.name))
                    if expert != decision.expert:
                        log.warning("route_fallback", wanted=decision.expert, expert=expert)
                    return expert, handles[picked.name]
            wait = self._next_opening(order, tried)
            remaining = deadline - self._clock()
            if wait is None or wait > remaining:
                retry = math.ceil(wait) if wait is not None else 1
                raise NoReplicaAvailableError(
                    f"no replica of {' or '.join(order)} can take the request now "
                    f"({len(tried)} tried)",
                    retry_after=max(1, retry),
                )
            await self._sleep(max(wait, 0.01))

    def _next_opening(self, order: Sequence[str], tried: set[tuple[str, str]]) -> float | None:
        """Seconds until an untried, healthy, non-draining replica's breaker half-opens."""
        waits = [
            h.state.breaker.retry_in()
            for expert in order
            for h in self.manager.replicas(expert)
            if (expert, h.name) not in tried and h.state.healthy and not h.state.draining
        ]
        return min(waits) if waits else None

    def _failed(self, handle: ReplicaHandle, exc: ReplicaError) -> None:
        breaker = handle.state.breaker
        if exc.is_client_error:
            breaker.record_success()  # it answered: the request was at fault
            return
        handle.failures += 1
        handle.last_error = str(exc)
        breaker.record_failure(exc.status, exc.retry_after)
        log.warning(
            "replica_failed",
            expert=handle.expert,
            replica=handle.name,
            status=exc.status,
            error=str(exc),
            breaker=breaker.state.value,
        )


class ReplicaAttempt:
    """One try of a request on one replica, from admission (its breaker slot already taken) to
    one verdict: counted as outstanding and as a request on creation; `close` records the
    latency and the outcome exactly once, whichever path (answer, stream, failure) ends it."""

    def __init__(
        self,
        handle: ReplicaHandle,
        clock: Callable[[], float],
        on_failure: Callable[[ReplicaHandle, ReplicaError], None],
    ) -> None:
        self.handle = handle
        self._clock = clock
        self._on_failure = on_failure
        self._started = clock()
        self._closed = False
        handle.state.start()
        handle.requests += 1

    def close(self, outcome: BaseException | None) -> None:
        """None: the replica answered in full. A `ReplicaError`: it failed (or refused the
        request, which is no fault of the replica). Anything else (cancelled, the client left,
        a bug): no verdict, the breaker slot is given back."""
        if self._closed:
            return
        self._closed = True
        state = self.handle.state
        if outcome is None:
            state.finish(self._clock() - self._started)
            state.breaker.record_success()
        elif isinstance(outcome, ReplicaError):
            state.finish(self._clock() - self._started)
            self._on_failure(self.handle, outcome)
        else:
            state.finish(None)
            state.breaker.release()


class _AbandonedError(Exception):
    """The stream's consumer went away before the end (no verdict on the replica)."""


async def _relay(
    expert: str, attempt: ReplicaAttempt, first: dict[str, Any] | None, chunks: Chunks
) -> Chunks:
    outcome: BaseException | None = _AbandonedError()
    try:
        chunk = first
        while chunk is not None:
            chunk["model"] = expert
            yield chunk
            chunk = await anext(chunks, None)
        outcome = None
    except ReplicaError as exc:
        outcome = exc
        raise
    finally:
        attempt.close(outcome)
        await chunks.aclose()


async def _retarget(body: Mapping[str, Any], handle: ReplicaHandle) -> dict[str, Any]:
    return {**body, "model": await handle.model_id()}
