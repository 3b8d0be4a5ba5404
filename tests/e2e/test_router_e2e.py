"""The router end to end: two experts with two replicas each (real `largeforge serve` processes
with tiny models), the router process in front, and the official `openai` client."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.e2e.server import free_port, spawn, stop, wait_ready

pytestmark = pytest.mark.slow
EXPERTS = ("code", "math")


@dataclass
class Cluster:
    router: str
    replicas: dict[str, tuple[int, subprocess.Popen[bytes]]]
    model_dir: Path
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_replica(self, name: str, port: int) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        args = ("--model", str(self.model_dir), "--served-model-name", f"{name}-model")
        process = spawn("serve", *args, "--max-num-seqs", "4", port=port, log=log)
        self.replicas[name] = (port, process)
        self.processes.append(process)
        return process

    def experts(self) -> dict[str, dict[str, Any]]:
        view = httpx.get(f"{self.router}/router/experts", timeout=5).json()
        return {r["name"]: r for e in view["experts"] for r in e["replicas"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.support import build_tiny_model

    root = tmp_path_factory.mktemp("router")
    cluster = Cluster("", {}, build_tiny_model(root / "tiny"), root)
    for expert in EXPERTS:
        for i in (1, 2):
            cluster.start_replica(f"{expert}-{i}", free_port())
    config = {
        "name": "auto",
        "default_expert": "math",
        "classifier": "hybrid",
        "strategy": "least_outstanding",
        "health_interval_s": 0.3,
        "max_wait_s": 5,
        "breaker": {"failure_threshold": 2, "base_backoff_s": 1.0, "max_backoff_s": 2.0},
        "affinity": {"enabled": True},
        "experts": [
            {
                "name": "code",
                "keywords": {"python": 1.0, "bug": 1.0, "compiler": 1.0},
                "examples": ["why does my program crash", "fix this function"],
                "replicas": [{"name": "code-1", "url": "http://127.0.0.1:{code-1}/v1"},
                             {"name": "code-2", "url": "http://127.0.0.1:{code-2}/v1"}],
            },
            {
                "name": "math",
                "keywords": {"integral": 1.0, "equation": 1.0},
                "examples": ["what are the odds of rolling two sixes", "solve for x"],
                "replicas": [{"name": "math-1", "url": "http://127.0.0.1:{math-1}/v1"},
                             {"name": "math-2", "url": "http://127.0.0.1:{math-2}/v1"}],
            },
        ],
    }  # fmt: skip
    text = yaml.safe_dump(config)
    for name, (port, _process) in cluster.replicas.items():
        text = text.replace("{" + name + "}", str(port))
    (root / "router.yaml").write_text(text)
    try:
        for name, (port, process) in cluster.replicas.items():
            wait_ready(process, f"http://127.0.0.1:{port}", root / f"{name}.log")
        router_port = free_port()
        router = spawn("route serve", str(root / "router.yaml"), port=router_port,
                       log=root / "router.log")  # fmt: skip
        cluster.processes.append(router)
        cluster.router = f"http://127.0.0.1:{router_port}"
        wait_ready(router, cluster.router, root / "router.log")
        yield cluster
    finally:
        for process in cluster.processes:
            stop(process)


def ask(client: openai.OpenAI, text: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=12
    )
    reply = raw.parse()
    assert reply.choices[0].message.content is not None
    return raw.headers["x-largeforge-expert"], reply.model


def test_answers_come_from_the_expert_of_the_topic(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=f"{cluster.router}/v1", api_key="none", max_retries=0)
    assert ask(client, "my python script has a bug") == ("code", "code")
    assert ask(client, "compute the integral of x squared") == ("math", "math")
    assert ask(client, "what are the odds of rolling two sixes") == ("math", "math")
    models = [m.id for m in client.models.list().data]
    assert models == ["auto", "code", "math"]
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "python bug"}], max_tokens=8,
        stream=True,
    )  # fmt: skip
    chunks = list(stream)
    assert chunks
    assert {c.model for c in chunks} == {"code"}


def test_killing_a_replica_mid_load_fails_no_request_and_its_breaker_recovers(
    cluster: Cluster,
) -> None:
    client = openai.OpenAI(base_url=f"{cluster.router}/v1", api_key="none", max_retries=0)
    done = threading.Event()
    finished: list[int] = []

    def one(i: int) -> tuple[str, str]:
        result = ask(client, f"python bug number {i}")
        finished.append(i)
        if len(finished) == 8:
            done.set()
        return result

    port, victim = cluster.replicas["code-1"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, i) for i in range(48)]
        assert done.wait(120)
        victim.send_signal(signal.SIGKILL)  # mid-load: requests are in flight on it
        results = [f.result() for f in futures]  # raises if any client request failed
    assert results == [("code", "code")] * 48

    replica = cluster.experts()["code-1"]
    assert replica["failures"] >= 1
    assert "open" in replica["transitions"]
    cluster.start_replica("code-1", port)  # the replica comes back on the same address
    # Wait for the end state, which stays; the brief half-open in between is read from the
    # breaker's recorded transitions (every change is recorded), not caught by polling.
    deadline = time.monotonic() + 120
    while cluster.experts()["code-1"]["breaker"] != "closed":
        assert time.monotonic() < deadline, cluster.experts()["code-1"]
        time.sleep(0.2)
    transitions = cluster.experts()["code-1"]["transitions"]
    assert transitions[-3:] == ["open", "half_open", "closed"], transitions
    assert ask(client, "python bug again") == ("code", "code")


def test_a_local_replica_serves_inside_the_router_process(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`local:` replicas: the router loads the model itself, serves it on a private loopback
    port, and routes to it like any other replica (answers, streams, health)."""
    config = {
        "name": "auto",
        "default_expert": "chat",
        "classifier": "keyword",
        "health_interval_s": 0.3,
        "experts": [
            {"name": "chat", "keywords": {"hello": 1.0},
             "replicas": [{"name": "chat-local", "local": str(tiny_model_dir)}]},
        ],
    }  # fmt: skip
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "router.log"
    router = spawn("route serve", str(tmp_path / "router.yaml"), port=port, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(router, base, log)  # 200 only once the local replica has loaded its model
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=6
        )
        assert raw.headers["x-largeforge-replica"] == "chat-local"
        reply = raw.parse()
        assert reply.model == "chat"
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello"}], max_tokens=6,
            stream=True,
        )  # fmt: skip
        chunks = list(stream)
        assert chunks
        assert {c.model for c in chunks} == {"chat"}
        view = httpx.get(f"{base}/router/experts", timeout=5).json()
        (replica,) = view["experts"][0]["replicas"]
        assert replica["target"] == f"local:{tiny_model_dir}"
        assert replica["healthy"]
        assert replica["requests"] == 2
    finally:
        stop(router)


def test_a_session_stays_on_one_replica_and_moves_once_when_it_is_killed(
    cluster: Cluster,
) -> None:
    """Session affinity: 20 turns of one conversation (`user` is the session key) land on one
    replica of the routed expert; killing that replica moves the session once, and the client
    (no retries) sees every turn answered."""
    client = openai.OpenAI(base_url=f"{cluster.router}/v1", api_key="none", max_retries=0)
    conversation: list[dict[str, str]] = []

    def turn(i: int) -> tuple[str, str | None]:
        conversation.append({"role": "user", "content": f"solve the equation number {i}"})
        raw = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=conversation,
            max_tokens=6,
            user="session-7",  # type: ignore[arg-type]
        )
        reply = raw.parse()
        assert raw.headers["x-largeforge-expert"] == "math"
        conversation.append(
            {"role": "assistant", "content": reply.choices[0].message.content or ""}
        )
        return raw.headers["x-largeforge-replica"], raw.headers.get("x-largeforge-session-moved")

    first = [turn(i) for i in range(20)]
    pinned = first[0][0]
    assert first == [(pinned, None)] * 20
    port, victim = cluster.replicas[pinned]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    other = "math-2" if pinned == "math-1" else "math-1"
    after = [turn(i) for i in range(20, 30)]
    assert after == [(other, f"{pinned}->{other}")] + [(other, None)] * 9
    metrics = httpx.get(f"{cluster.router}/metrics", timeout=5).text
    assert 'largeforge_router_session_moves_total{expert="math"} 1.0' in metrics
    cluster.start_replica(pinned, port)  # back for any test after this one
