"""RouterService over fake replicas: routing, failover, breakers, waiting, streams, draining."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from largeforge.application.classifiers import KeywordClassifier
from largeforge.application.experts import ExpertManager
from largeforge.application.router import RouterService
from largeforge.domain.circuit_breaker import BreakerPolicy, BreakerState
from largeforge.domain.errors import (
    ConfigError,
    ModelNotServedError,
    NoReplicaAvailableError,
    ReplicaError,
)
from largeforge.domain.load_balancing import RoundRobin
from largeforge.domain.routing import Expert, ReplicaSpec, RouteOn, RouteStage, RoutingPolicy
from tests.router_fakes import FakeReplicas


class Clock:
    """A fake monotonic clock; `sleep` advances it instead of waiting, and records the wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


def expert(name: str, keywords: dict[str, float], replicas: int) -> Expert:
    specs = tuple(
        ReplicaSpec(f"{name}-{i}", url=f"http://{name}{i}/v1") for i in range(1, 1 + replicas)
    )
    return Expert(name, keywords=keywords, replicas=specs)


def build(
    max_wait_s: float = 0.0, clock: Clock | None = None
) -> tuple[RouterService, FakeReplicas]:
    clock = clock or Clock()
    policy = RoutingPolicy(
        (expert("code", {"python": 1.0}, 2), expert("math", {"integral": 1.0}, 2),
         expert("general", {}, 1)),
        "general",
    )  # fmt: skip
    replicas = FakeReplicas()
    manager = ExpertManager(
        policy,
        replicas,
        BreakerPolicy(failure_threshold=2, base_backoff_s=10),
        clock=clock,
    )
    service = RouterService(
        "auto", KeywordClassifier(policy), manager, RoundRobin(), max_wait_s=max_wait_s,
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    return service, replicas


def chat(text: str) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def ask(service: RouterService, text: str, model: str = "auto") -> tuple[Any, dict[str, Any]]:
    decision = service.decide(model, [("user", text)])
    return asyncio.run(service.post("/chat/completions", chat(text), decision))


def content(payload: dict[str, Any]) -> str:
    return str(payload["choices"][0]["message"]["content"])


def test_routes_by_topic_and_balances_across_the_experts_replicas() -> None:
    service, replicas = build()
    answered = [ask(service, "python question")[0].replica for _ in range(4)]
    assert answered == ["code-1", "code-2", "code-1", "code-2"]
    routed, payload = ask(service, "an integral")
    assert routed.expert == "math"
    assert payload["model"] == "math"
    sent = replicas.clients[routed.replica].received[-1][1]
    assert sent["model"] == f"{routed.replica}-model"  # the replica's own model id


def test_explicit_expert_and_unknown_model() -> None:
    service, _ = build()
    decision = service.decide("math", [("user", "python")])
    assert (decision.expert, decision.stage) == ("math", RouteStage.EXPLICIT)
    with pytest.raises(ModelNotServedError):
        service.decide("gpt-4", [("user", "hi")])
    assert service.models() == ("auto", "code", "math", "general")


def test_a_failing_replica_is_skipped_and_its_breaker_opens() -> None:
    service, replicas = build()
    replicas.script("code-1").down = True
    for _ in range(4):
        _routed, payload = ask(service, "python")
        assert content(payload) == "answer from code-2"
    handle = service.manager.find("code", "code-1")
    assert handle.state.breaker.state is BreakerState.OPEN
    assert handle.failures == 2  # opened after two failures, then never tried again


def test_all_replicas_down_falls_back_to_the_default_expert() -> None:
    service, replicas = build()
    replicas.script("code-1").status = 503
    replicas.script("code-2").down = True
    routed, payload = ask(service, "python")
    assert routed.expert == "general"
    assert routed.fallback
    assert routed.attempts == 3
    assert content(payload) == "answer from general-1"


def test_client_errors_are_returned_without_retry_or_tripping_the_breaker() -> None:
    service, replicas = build()
    for name in ("code-1", "code-2"):
        replicas.script(name).status = 400
    for _ in range(5):
        with pytest.raises(ReplicaError) as info:
            ask(service, "python")
        assert info.value.status == 400
    assert sum(len(replicas.clients[n].received) for n in ("code-1", "code-2")) == 5
    for name in ("code-1", "code-2"):
        assert service.manager.find("code", name).state.breaker.state is BreakerState.CLOSED


def test_nothing_available_is_503_with_retry_after() -> None:
    clock = Clock()
    service, replicas = build(clock=clock)
    for name in ("code-1", "code-2", "general-1"):
        replicas.script(name).down = True
    with pytest.raises(NoReplicaAvailableError):
        ask(service, "python")  # tries all three, fails
    ask_again = pytest.raises(NoReplicaAvailableError)
    with ask_again as info:
        ask(service, "python")
    assert 1 <= info.value.retry_after <= 10  # breakers reopen within their 10 s back-off


def open_every_breaker(service: RouterService) -> None:
    """Two failures each: every breaker opens for its 10 s base back-off."""
    for expert_name, name in (
        ("code", "code-1"), ("code", "code-2"), ("math", "math-1"), ("math", "math-2"),
        ("general", "general-1"),
    ):  # fmt: skip
        breaker = service.manager.find(expert_name, name).state.breaker
        breaker.record_failure(None)
        breaker.record_failure(None)
        assert breaker.state is BreakerState.OPEN


def test_waits_for_a_breaker_to_half_open_then_probes() -> None:
    """Every breaker is open: the router waits (bounded) for the first to half-open."""
    clock = Clock()
    service, _replicas = build(max_wait_s=15.0, clock=clock)
    open_every_breaker(service)
    routed, _payload = ask(service, "python")
    assert clock.slept == [10.0]  # waited exactly until the breakers half-opened
    assert routed.expert == "code"
    breaker = service.manager.find("code", routed.replica).state.breaker
    assert breaker.state is BreakerState.CLOSED  # the probe succeeded


def test_waits_then_answers_503_when_the_probes_fail() -> None:
    """The wait-then-503 path: every breaker half-opens within max_wait_s, every probe fails,
    and the router answers `NoReplicaAvailableError` (503) instead of waiting again."""
    clock = Clock()
    service, replicas = build(max_wait_s=15.0, clock=clock)
    open_every_breaker(service)
    for name in ("code-1", "code-2", "general-1"):
        replicas.script(name).down = True
    with pytest.raises(NoReplicaAvailableError) as info:
        ask(service, "python")
    assert clock.slept == [10.0]  # one wait for the half-open, then no more
    probes = {
        name: (service.manager.find(e, name).requests, service.manager.find(e, name).failures)
        for e, name in (("code", "code-1"), ("code", "code-2"), ("general", "general-1"))
    }
    assert probes == {"code-1": (1, 1), "code-2": (1, 1), "general-1": (1, 1)}  # probed once
    assert info.value.retry_after >= 1
    for name in ("code-1", "code-2"):
        handle = service.manager.find("code", name)
        assert handle.state.breaker.state is BreakerState.OPEN  # the failed probe reopened it
        assert handle.state.outstanding == 0


def test_gives_up_at_once_when_no_breaker_half_opens_within_max_wait() -> None:
    clock = Clock()
    service, _replicas = build(max_wait_s=2.0, clock=clock)
    open_every_breaker(service)
    with pytest.raises(NoReplicaAvailableError) as info:
        ask(service, "python")
    assert clock.slept == []
    assert info.value.retry_after == 10


def collect(
    service: RouterService, text: str
) -> tuple[Any, list[dict[str, Any]], Exception | None]:
    async def run() -> tuple[Any, list[dict[str, Any]], Exception | None]:
        decision = service.decide("auto", [("user", text)])
        routed, chunks = await service.stream(
            "/chat/completions", chat(text) | {"stream": True}, decision
        )
        got: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                got.append(chunk)
        except ReplicaError as exc:
            return routed, got, exc
        return routed, got, None

    return asyncio.run(run())


def test_stream_fails_over_before_the_first_chunk_only() -> None:
    service, replicas = build()
    replicas.script("code-1").down = True
    routed, chunks, error = collect(service, "python")
    assert routed.replica == "code-2"
    assert error is None
    assert [c["model"] for c in chunks] == ["code"] * 3
    replicas.script("code-1").down = False
    replicas.script("code-2").fail_after_chunks = 1
    replicas.script("code-1").fail_after_chunks = 1
    routed, chunks, error = collect(service, "python")
    assert len(chunks) == 1
    assert error is not None
    handle = service.manager.find("code", routed.replica)
    assert handle.failures >= 1
    assert handle.state.outstanding == 0


def test_a_stream_fails_over_to_the_default_expert() -> None:
    service, replicas = build()
    replicas.script("code-1").down = True
    replicas.script("code-2").status = 503
    routed, chunks, error = collect(service, "python")
    assert error is None
    assert (routed.expert, routed.replica, routed.attempts) == ("general", "general-1", 3)
    assert routed.fallback
    assert [c["model"] for c in chunks] == ["general"] * 3
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [
        "general-1:0 ", "general-1:1 ", "general-1:2 "
    ]  # fmt: skip
    for expert_name, name in (("code", "code-1"), ("code", "code-2"), ("general", "general-1")):
        handle = service.manager.find(expert_name, name)
        assert handle.state.outstanding == 0
        assert handle.requests == 1
    assert service.manager.find("code", "code-1").failures == 1
    assert service.manager.find("general", "general-1").failures == 0


def test_every_path_closes_its_attempt_once() -> None:
    """Answered, streamed to the end, and failed attempts each leave one verdict: no request
    stays outstanding and the latency is recorded; a stream the client left gets none."""
    service, _replicas = build()
    ask(service, "python")  # code-1 answers
    collect(service, "python")  # code-2 streams to the end
    for name in ("code-1", "code-2"):
        handle = service.manager.find("code", name)
        assert (handle.requests, handle.state.outstanding) == (1, 0)
        assert handle.state.ewma_latency_s is not None
        assert handle.state.breaker.snapshot().consecutive_failures == 0

    async def leave_after_one_chunk() -> None:
        decision = service.decide("auto", [("user", "python")])
        _routed, chunks = await service.stream("/chat/completions", chat("python"), decision)
        await anext(chunks)
        await chunks.aclose()  # the client went away

    asyncio.run(leave_after_one_chunk())
    handle = service.manager.find("code", "code-1")
    assert (handle.requests, handle.state.outstanding, handle.failures) == (2, 0, 0)
    assert handle.state.breaker.state is BreakerState.CLOSED


def test_outstanding_returns_to_zero_when_a_request_is_cancelled() -> None:
    service, replicas = build()
    replicas.script("code-1").hold = True

    async def run() -> None:
        decision = service.decide("auto", [("user", "python")])
        task = asyncio.create_task(service.post("/chat/completions", chat("python"), decision))
        await replicas.clients["code-1"].arrived.wait()  # the request reached the replica
        assert service.manager.find("code", "code-1").state.outstanding == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    handle = service.manager.find("code", "code-1")
    assert handle.state.outstanding == 0
    assert handle.state.breaker.state is BreakerState.CLOSED
    assert handle.failures == 0


def test_drained_replicas_get_no_new_requests_and_can_be_removed() -> None:
    service, replicas = build()
    service.manager.drain("code", "code-1")
    assert {ask(service, "python")[0].replica for _ in range(3)} == {"code-2"}
    asyncio.run(service.manager.remove_replica("code", "code-1"))
    assert [h.name for h in service.manager.replicas("code")] == ["code-2"]
    assert replicas.clients["code-1"].closed
    with pytest.raises(ConfigError, match="no replica"):
        service.manager.find("code", "code-1")
    service.manager.add_replica("code", ReplicaSpec("code-9", url="http://x/v1"))
    with pytest.raises(ConfigError, match="already has"):
        service.manager.add_replica("code", ReplicaSpec("code-9", url="http://x/v1"))


def test_health_checks_exclude_down_replicas_and_close_half_open_breakers() -> None:
    clock = Clock()
    service, replicas = build(clock=clock)
    manager = service.manager
    replicas.script("code-1").down = True
    asyncio.run(manager.check_health())
    assert not manager.find("code", "code-1").state.healthy
    assert {ask(service, "python")[0].replica for _ in range(3)} == {"code-2"}
    breaker = manager.find("code", "code-1").state.breaker
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 11  # past the back-off
    assert breaker.state is BreakerState.HALF_OPEN
    replicas.script("code-1").down = False
    asyncio.run(manager.check_health())  # the check is the probe
    assert breaker.state is BreakerState.CLOSED
    assert manager.find("code", "code-1").state.healthy
    states = [s for _t, s in manager.find("code", "code-1").transitions]
    assert states == ["open", "half_open", "closed"]


def test_tool_turns_are_not_classified_last_user_or_whole_conversation() -> None:
    """Tool results and assistant turns (with or without text) are never classified: the last
    user turn decides, or with `route_on: conversation` every user turn together."""
    experts = (
        expert("code", {"python": 1.0, "bug": 1.0}, 1),
        expert("math", {"integral": 1.0, "derivative": 1.0}, 1),
        expert("general", {}, 1),
    )
    conversation = [
        ("user", "an integral and a derivative"),
        ("assistant", ""),  # a tool call: no content
        ("tool", "python bug"),
        ("user", "python"),
        ("assistant", "let me run it"),
        ("tool", "integral derivative"),
    ]
    for route_on, wanted in [(RouteOn.LAST_USER, "code"), (RouteOn.CONVERSATION, "math")]:
        policy = RoutingPolicy(experts, "general", route_on=route_on)
        manager = ExpertManager(policy, FakeReplicas(), BreakerPolicy())
        service = RouterService("auto", KeywordClassifier(policy), manager, RoundRobin())
        decision = service.decide("auto", conversation)
        assert (decision.expert, decision.stage) == (wanted, RouteStage.KEYWORD), route_on
