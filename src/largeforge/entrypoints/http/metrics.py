"""Prometheus metrics of the API (one registry per app, so tests and apps do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from largeforge.application.ports import EngineLoad

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class ServerMetrics:
    """Requests by status, tokens, time to first token, latency, queue depth, running."""

    def __init__(self, load: Callable[[], EngineLoad | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "largeforge_requests",
            "Finished HTTP requests to the API by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "largeforge_prompt_tokens", "Prompt tokens processed.", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.generation_tokens = Counter(
            "largeforge_generation_tokens", "Tokens generated.", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.time_to_first_token = Histogram(
            "largeforge_time_to_first_token_seconds",
            "Seconds from request arrival to the first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "largeforge_e2e_request_latency_seconds",
            "Seconds from request arrival to the last byte of its response.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        waiting = Gauge(
            "largeforge_num_requests_waiting",
            "Sequences queued for a batch slot.",
            registry=self.registry,
        )
        running = Gauge(
            "largeforge_num_requests_running",
            "Sequences being generated.",
            registry=self.registry,
        )
        waiting.set_function(lambda: float(getattr(load(), "waiting", 0)))
        running.set_function(lambda: float(getattr(load(), "running", 0)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
