"""ExpertManager: the experts' replicas at runtime, their clients, health checks and draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from largeforge.application.ports import ExpertClient
from largeforge.domain.circuit_breaker import BreakerPolicy, BreakerState, CircuitBreaker
from largeforge.domain.errors import ConfigError, ReplicaError
from largeforge.domain.load_balancing import Replica
from largeforge.domain.routing import Expert, ReplicaSpec, RoutingPolicy

log = structlog.get_logger(__name__)

ClientFactory = Callable[[ReplicaSpec], ExpertClient]


@dataclass(eq=False)
class ReplicaHandle:
    """One replica: its spec, its balancing/breaker state, its client and counters."""

    expert: str
    spec: ReplicaSpec
    state: Replica
    client: ExpertClient
    model: str | None = None
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    transitions: list[tuple[float, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    async def model_id(self) -> str:
        """The model id to request from this replica (asked once when the spec has none)."""
        if self.model is None:
            models = await self.client.models()
            if not models:
                raise ReplicaError(f"replica {self.name} serves no model", status=None)
            self.model = models[0]
        return self.model

    def describe(self) -> dict[str, Any]:
        snap = self.state.breaker.snapshot()
        return {
            "name": self.name,
            "target": self.spec.url or f"local:{self.spec.local}",
            "model": self.model,
            "weight": self.spec.weight,
            "healthy": self.state.healthy,
            "draining": self.state.draining,
            "breaker": snap.state.value,
            "consecutive_failures": snap.consecutive_failures,
            "failure_rate": round(snap.failure_rate, 3),
            "retry_in_s": round(snap.retry_in, 3),
            "opened_count": snap.opened_count,
            "outstanding": self.state.outstanding,
            "ewma_latency_ms": (
                None
                if self.state.ewma_latency_s is None
                else round(self.state.ewma_latency_s * 1000, 2)
            ),
            "requests": self.requests,
            "failures": self.failures,
            "last_error": self.last_error,
            "transitions": [state for _at, state in self.transitions],
        }


class ExpertManager:
    """Holds each expert's replicas; adds, drains and removes them at runtime; checks health.

    A health check asks each replica for its models. A replica that fails it is left out of
    balancing until it passes again; while its breaker is half-open the check is its probe, so
    a replica that came back closes its breaker even without traffic.
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        client_factory: ClientFactory,
        breaker_policy: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        health_timeout_s: float = 2.0,
    ) -> None:
        self.policy = policy
        self._factory = client_factory
        self._breaker_policy = breaker_policy or BreakerPolicy()
        self._clock = clock
        self._health_timeout = health_timeout_s
        self._replicas: dict[str, list[ReplicaHandle]] = {e.name: [] for e in policy.experts}
        for expert in policy.experts:
            for spec in expert.replicas:
                self.add_replica(expert.name, spec)

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(self._replicas)

    def replicas(self, expert: str) -> list[ReplicaHandle]:
        """The expert's replicas (a copy: safe to iterate while replicas change)."""
        self._known(expert)
        return list(self._replicas[expert])

    def find(self, expert: str, name: str) -> ReplicaHandle:
        for handle in self.replicas(expert):
            if handle.name == name:
                return handle
        raise ConfigError(f"expert '{expert}' has no replica '{name}'")

    def add_replica(self, expert: str, spec: ReplicaSpec) -> ReplicaHandle:
        """Start sending the expert's traffic to a new replica too."""
        self._known(expert)
        if any(h.name == spec.name for h in self._replicas[expert]):
            raise ConfigError(f"expert '{expert}' already has a replica named '{spec.name}'")
        handle: ReplicaHandle
        breaker = CircuitBreaker(
            self._breaker_policy,
            clock=self._clock,
            on_change=lambda old, new: self._changed(handle, old, new),
        )
        handle = ReplicaHandle(
            expert=expert,
            spec=spec,
            state=Replica(spec.name, weight=spec.weight, breaker=breaker),
            client=self._factory(spec),
            model=spec.model,
        )
        self._replicas[expert].append(handle)
        log.info("replica_added", expert=expert, replica=spec.name)
        return handle

    def add_expert(self, expert: Expert) -> None:
        """Route to a new expert too, with its replicas (`ConfigError` if the name is taken)."""
        self.policy = self.policy.with_expert(expert)
        self._replicas[expert.name] = []
        for spec in expert.replicas:
            self.add_replica(expert.name, spec)
        log.info("expert_added", expert=expert.name, replicas=len(expert.replicas))

    async def remove_expert(self, name: str) -> None:
        """Stop routing to an expert (not the default one): its replicas are drained, their
        requests in flight finish, then it is forgotten."""
        self._known(name)
        self.policy = self.policy.without_expert(name)
        for handle in list(self._replicas[name]):
            await self.remove_replica(name, handle.name)
        del self._replicas[name]
        log.info("expert_removed", expert=name)

    def drain(self, expert: str, name: str, draining: bool = True) -> ReplicaHandle:
        """Stop (or resume) new requests to a replica; requests in flight finish."""
        handle = self.find(expert, name)
        handle.state.draining = draining
        log.info("replica_draining" if draining else "replica_resumed", expert=expert, replica=name)
        return handle

    async def remove_replica(self, expert: str, name: str, timeout_s: float = 30.0) -> None:
        """Drain a replica, wait (bounded) for its requests in flight, then forget it."""
        handle = self.drain(expert, name)
        deadline = self._clock() + timeout_s
        while handle.state.outstanding and self._clock() < deadline:
            await asyncio.sleep(0.05)
        self._replicas[expert].remove(handle)
        await handle.client.aclose()
        log.info("replica_removed", expert=expert, replica=name)

    async def check_health(self) -> None:
        """Check every replica once, concurrently."""
        handles = [h for hs in self._replicas.values() for h in hs]
        await asyncio.gather(*(self._check(h) for h in handles))

    async def run_health_checks(self, interval_s: float) -> None:
        """Check health every `interval_s` until cancelled (the first check after one interval)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.check_health()

    def describe(self) -> list[dict[str, Any]]:
        """Every expert with its replicas' state (for `GET /router/experts`)."""
        return [
            {
                "name": expert.name,
                "description": expert.description,
                "default": expert.name == self.policy.default_expert,
                "replicas": [h.describe() for h in self._replicas[expert.name]],
            }
            for expert in self.policy.experts
        ]

    async def aclose(self) -> None:
        for handles in self._replicas.values():
            for handle in handles:
                await handle.client.aclose()

    async def _check(self, handle: ReplicaHandle) -> None:
        breaker = handle.state.breaker
        probing = breaker.state is BreakerState.HALF_OPEN and breaker.acquire()
        try:
            models = await asyncio.wait_for(handle.client.models(), self._health_timeout)
        except (ReplicaError, TimeoutError) as exc:
            if handle.state.healthy:
                log.warning("replica_unhealthy", expert=handle.expert, replica=handle.name)
            handle.state.healthy = False
            handle.last_error = str(exc) or type(exc).__name__
            if probing:
                breaker.record_failure(getattr(exc, "status", None))
            return
        if not handle.state.healthy:
            log.info("replica_healthy", expert=handle.expert, replica=handle.name)
        handle.state.healthy = True
        if handle.model is None and models:
            handle.model = models[0]
        if probing:
            breaker.record_success()

    def _changed(self, handle: ReplicaHandle, old: BreakerState, new: BreakerState) -> None:
        handle.transitions.append((self._clock(), new.value))
        del handle.transitions[:-20]
        log.warning(
            "breaker_changed",
            expert=handle.expert,
            replica=handle.name,
            old=old.value,
            new=new.value,
        )

    def _known(self, expert: str) -> None:
        if expert not in self._replicas:
            raise ConfigError(
                f"unknown expert '{expert}'; experts: {', '.join(self._replicas) or 'none'}"
            )
