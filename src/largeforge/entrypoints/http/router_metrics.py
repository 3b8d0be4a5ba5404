"""Prometheus metrics of the router: routes, requests and latency per expert, and each
replica's breaker state, outstanding requests, health and latency read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from largeforge.application.router import Routed, RouterService
from largeforge.domain.cascade import CascadeTrace
from largeforge.domain.circuit_breaker import BreakerState
from largeforge.domain.routing import RouteDecision
from largeforge.entrypoints.http.metrics import LATENCY_BUCKETS

BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class RouterMetrics:
    def __init__(self, service: RouterService) -> None:
        self.registry = CollectorRegistry()
        self.routes = Counter(
            "largeforge_router_routes", "Route decisions by expert and deciding stage.",
            ["expert", "stage"], registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "largeforge_router_requests",
            "Routed requests by the expert and replica that answered, and outcome.",
            ["expert", "replica", "outcome"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "largeforge_router_fallbacks", "Requests answered by the default expert instead.",
            ["wanted"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "largeforge_router_request_latency_seconds",
            "Seconds from arrival to the last byte, by the expert that answered.",
            ["expert"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.cost = Counter(
            "largeforge_router_cost",
            "What the answers cost, by the expert that gave them (its cost per 1k tokens).",
            ["expert"], registry=self.registry,
        )  # fmt: skip
        self.session_moves = Counter(
            "largeforge_router_session_moves",
            "Sessions moved off their pinned replica (it failed or left).",
            ["expert"], registry=self.registry,
        )  # fmt: skip
        self.cascade_answers = Counter(
            "largeforge_router_cascade_answers",
            "Cascade answers by the step (1-based) and expert that gave them.",
            ["cascade", "step", "expert"], registry=self.registry,
        )  # fmt: skip
        self.escalations = Counter(
            "largeforge_router_cascade_escalations",
            "Cascade steps passed over, by the check that failed (or 'unavailable').",
            ["cascade", "step", "reason"], registry=self.registry,
        )  # fmt: skip
        self.exhausted_total = Counter(
            "largeforge_router_cascade_exhausted",
            "Cascade requests no step answered (an error went back).",
            ["cascade"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ReplicaCollector(service))

    def decided(self, decision: RouteDecision) -> None:
        self.routes.labels(decision.expert, decision.stage.value).inc()

    def cascaded(self, trace: CascadeTrace) -> None:
        """A cascade answered: the step that did, every escalation and every step's cost."""
        for outcome in trace.outcomes:
            if outcome.cost:
                self.cost.labels(outcome.expert).inc(outcome.cost)
            if not outcome.verdict.passed:
                self.escalations.labels(
                    trace.cascade, str(outcome.step), outcome.failed_check
                ).inc()
        answered = trace.outcomes[-1]
        if answered.verdict.passed:
            self.cascade_answers.labels(trace.cascade, str(answered.step), answered.expert).inc()

    def exhausted(self, cascade: str) -> None:
        self.exhausted_total.labels(cascade).inc()

    def timer(self, expert: str) -> RequestTimer:
        return RequestTimer(self, expert)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """One routed request's outcome and latency."""

    def __init__(self, metrics: RouterMetrics, expert: str) -> None:
        self._metrics = metrics
        self._expert = expert
        self._replica = "none"
        self._start = time.perf_counter()

    def routed(self, routed: Routed) -> None:
        self._expert, self._replica = routed.expert, routed.replica
        if routed.fallback:
            self._metrics.fallbacks.labels(routed.decision.expert).inc()
        if routed.moved_from is not None:
            self._metrics.session_moves.labels(routed.expert).inc()

    def done(self, cost: float = 0.0) -> None:
        """The answer arrived in full; `cost` is what it cost on its expert."""
        if cost:
            self._metrics.cost.labels(self._expert).inc(cost)
        self._metrics.requests.labels(self._expert, self._replica, "ok").inc()
        self._metrics.latency.labels(self._expert).observe(time.perf_counter() - self._start)

    def failed(self) -> None:
        self._metrics.requests.labels(self._expert, self._replica, "error").inc()


class _ReplicaCollector(Collector):
    def __init__(self, service: RouterService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["expert", "replica"]
        breaker = GaugeMetricFamily(
            "largeforge_router_breaker_state",
            "Circuit breaker per replica: 0 closed, 1 half-open, 2 open.",
            labels=labels,
        )
        outstanding = GaugeMetricFamily(
            "largeforge_router_outstanding_requests", "Requests in flight.", labels=labels
        )
        healthy = GaugeMetricFamily(
            "largeforge_router_replica_healthy", "1 when the last health check passed.",
            labels=labels,
        )  # fmt: skip
        latency = GaugeMetricFamily(
            "largeforge_router_replica_latency_seconds",
            "Moving average (EWMA) of the replica's request latency.",
            labels=labels,
        )
        for handle in self._service.replicas():
            key = [handle.expert, handle.name]
            breaker.add_metric(key, BREAKER_VALUES[handle.state.breaker.state])
            outstanding.add_metric(key, float(handle.state.outstanding))
            healthy.add_metric(key, 1.0 if handle.state.healthy else 0.0)
            if handle.state.ewma_latency_s is not None:
                latency.add_metric(key, handle.state.ewma_latency_s)
        yield from (breaker, outstanding, healthy, latency)
