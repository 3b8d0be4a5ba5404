"""RouterService: route OpenAI requests to the right expert, pick a replica, fail over.

The request bodies are forwarded as they are (with the replica's model id), so the experts
validate them exactly as they would without the router.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from largeforge.application.classifiers import QueryClassifier
from largeforge.application.experts import ExpertManager, ReplicaHandle
from largeforge.domain.errors import ModelNotServedError, NoReplicaAvailableError, ReplicaError
from largeforge.domain.load_balancing import BalancingStrategy, choose_replica
from largeforge.domain.routing import RouteDecision, RouteStage, query_text

log = structlog.get_logger(__name__)

Chunks = AsyncGenerator[dict[str, Any], None]


@dataclass(frozen=True)
class Routed:
    """Where a request went: the decision, the expert and replica that answered, the tries."""

    decision: RouteDecision
    expert: str
    replica: str
    attempts: int

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
    ) -> None:
        self.name = name
        self.classifier = classifier
        self.manager = manager
        self.strategy = strategy
        self._max_wait = max_wait_s
        self._clock = clock

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

    async def post(
        self, path: str, body: Mapping[str, Any], decision: RouteDecision
    ) -> tuple[Routed, dict[str, Any]]:
        """A non-streamed request, failing over until a replica answers."""
        tried: set[tuple[str, str]] = set()
        while True:
            expert, handle, started = await self._begin(decision, tried)
            try:
                payload = await handle.client.post(path, await _retarget(body, handle))
            except ReplicaError as exc:
                handle.state.finish(self._clock() - started)
                self._failed(handle, exc)
                if exc.is_client_error:
                    raise
                continue
            except BaseException:  # cancelled (the client left) or a bug: no verdict
                handle.state.finish(None)
                handle.state.breaker.release()
                raise
            handle.state.finish(self._clock() - started)
            handle.state.breaker.record_success()
            payload["model"] = expert
            return Routed(decision, expert, handle.name, len(tried)), payload

    async def stream(
        self, path: str, body: Mapping[str, Any], decision: RouteDecision
    ) -> tuple[Routed, Chunks]:
        """A streamed request. The first chunk is awaited here, so a replica that fails before
        it is replaced by another; a failure later ends the stream by raising `ReplicaError`."""
        tried: set[tuple[str, str]] = set()
        while True:
            expert, handle, started = await self._begin(decision, tried)
            chunks: Chunks | None = None
            try:
                chunks = handle.client.stream(path, await _retarget(body, handle))
                first = await anext(chunks, None)
            except ReplicaError as exc:
                handle.state.finish(self._clock() - started)
                self._failed(handle, exc)
                if chunks is not None:
                    await chunks.aclose()
                if exc.is_client_error:
                    raise
                continue
            except BaseException:
                handle.state.finish(None)
                handle.state.breaker.release()
                if chunks is not None:
                    await chunks.aclose()
                raise
            routed = Routed(decision, expert, handle.name, len(tried))
            return routed, self._relay(expert, handle, first, chunks, started)

    async def _relay(
        self,
        expert: str,
        handle: ReplicaHandle,
        first: dict[str, Any] | None,
        chunks: Chunks,
        started: float,
    ) -> Chunks:
        finished = False
        try:
            chunk = first
            while chunk is not None:
                chunk["model"] = expert
                yield chunk
                chunk = await anext(chunks, None)
            finished = True
            handle.state.breaker.record_success()
        except ReplicaError as exc:
            finished = True
            self._failed(handle, exc)
            raise
        finally:
            handle.state.finish(self._clock() - started if finished else None)
            if not finished:  # the client went away: no verdict on the replica
                handle.state.breaker.release()
            await chunks.aclose()

    async def _begin(
        self, decision: RouteDecision, tried: set[tuple[str, str]]
    ) -> tuple[str, ReplicaHandle, float]:
        """Admit the next replica and count the request as outstanding on it."""
        expert, handle = await self._admit(decision, tried)
        handle.state.start()
        handle.requests += 1
        return expert, handle, self._clock()

    async def _admit(
        self, decision: RouteDecision, tried: set[tuple[str, str]]
    ) -> tuple[str, ReplicaHandle]:
        """The next replica to try (its breaker slot taken), waiting for one if all are open."""
        order = [decision.expert]
        if self.manager.policy.default_expert not in order:
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
            await asyncio.sleep(max(wait, 0.01))

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


async def _retarget(body: Mapping[str, Any], handle: ReplicaHandle) -> dict[str, Any]:
    return {**body, "model": await handle.model_id()}
