"""Test doubles of the router's ports: bag-of-words embeddings and scriptable expert replicas."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from largeforge.domain.errors import ReplicaError
from largeforge.domain.routing import ReplicaSpec

DIM = 64


class FakeEmbeddings:
    def __init__(self, vectors: list[list[float]]) -> None:
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def cosine(self, other: FakeEmbeddings) -> list[list[float]]:  # type: ignore[override]
        return [[sum(a * b for a, b in zip(r, c, strict=True)) for c in other.vectors]
                for r in self.vectors]  # fmt: skip


class FakeEmbeddingModel:
    """Hashed bag of words, L2-normalised: texts sharing words are similar."""

    name = "fake-bow"

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> FakeEmbeddings:
        self.calls += 1
        vectors = []
        for text in texts:
            vector = [0.0] * DIM
            for word in re.findall(r"\w+", text.lower()):
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        return FakeEmbeddings(vectors)


@dataclass
class ReplicaScript:
    """How a fake replica behaves; change the fields while a test runs."""

    down: bool = False  # connection refused
    status: int | None = None  # answer this HTTP error status
    retry_after: float | None = None
    fail_after_chunks: int | None = None  # break the stream after this many chunks
    delay_s: float = 0.0
    hold: bool = False  # never answer (until the request is cancelled)
    chunks: int = 3
    answer: dict[str, Any] | None = None  # the message to answer with (default: its name)
    stream: list[dict[str, Any]] | None = None  # the chunks to stream (default: `chunks` texts)
    logprobs: list[float] | None = None  # token logprobs of the answer, sent when asked for
    reply: Any = None  # body -> (message, logprobs): an answer per request (else `answer`)
    finish_reason: str = "stop"


@dataclass
class FakeExpertClient:
    """A replica that answers with its own name, as `FakeReplicas` scripts it."""

    spec: ReplicaSpec
    script: ReplicaScript = field(default_factory=ReplicaScript)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each request
    closed: bool = False

    def _check(self, health: bool = False) -> None:
        if self.script.down:
            raise ReplicaError(f"{self.spec.name} did not answer: ConnectError")
        if self.script.status is not None and not (health and self.script.status < 500):
            body = {"error": {"message": f"{self.spec.name} refused", "type": "x",
                              "param": None, "code": None}}  # fmt: skip
            raise ReplicaError(
                f"{self.spec.name} answered {self.script.status}",
                status=self.script.status,
                body=body,
                retry_after=self.script.retry_after,
            )

    async def models(self) -> list[str]:
        self._check(health=True)
        return [f"{self.spec.name}-model"]

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.received.append((path, dict(body)))
        self.arrived.set()
        if self.script.hold:
            await asyncio.Event().wait()
        if self.script.delay_s:
            await asyncio.sleep(self.script.delay_s)
        self._check()
        message = copy.deepcopy(self.script.answer) or {
            "role": "assistant",
            "content": f"answer from {self.spec.name}",
        }
        values = self.script.logprobs
        if self.script.reply is not None:
            message, values = self.script.reply(body)
        logprobs = None
        if body.get("logprobs") and values is not None:
            entries = [{"token": f"t{i}", "logprob": v, "bytes": None, "top_logprobs": []}
                       for i, v in enumerate(values)]  # fmt: skip
            logprobs = {"content": entries}
        choice = {"index": 0, "message": message, "logprobs": logprobs,
                  "finish_reason": self.script.finish_reason}  # fmt: skip
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }

    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        self.received.append((path, dict(body)))
        self.arrived.set()
        self._check()
        for scripted in self.script.stream or ():
            yield {**copy.deepcopy(scripted), "model": body["model"]}  # as if parsed anew
        for i in range(self.script.chunks if self.script.stream is None else 0):
            if self.script.fail_after_chunks is not None and i >= self.script.fail_after_chunks:
                raise ReplicaError(f"{self.spec.name} failed mid-stream")
            if self.script.delay_s:
                await asyncio.sleep(self.script.delay_s)
            delta = {"content": f"{self.spec.name}:{i} "}
            yield {"id": "c", "object": "chat.completion.chunk", "model": body["model"],
                   "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip

    async def aclose(self) -> None:
        self.closed = True


class FakeReplicas:
    """A client factory for `ExpertManager` that remembers every client by replica name."""

    def __init__(self) -> None:
        self.clients: dict[str, FakeExpertClient] = {}

    def __call__(self, spec: ReplicaSpec) -> FakeExpertClient:
        client = FakeExpertClient(spec)
        self.clients[spec.name] = client
        return client

    def script(self, name: str) -> ReplicaScript:
        return self.clients[name].script
