"""A real `largeforge serve` at its limits: a busy engine with no waiting line answers 429 with
Retry-After (`--max-num-seqs 1 --max-queue 0`), and a body over `--max-body-bytes` gets 413.

The engine is made busy by a streamed request that cannot finish while the test runs (tens of
thousands of tokens, past end-of-sequence): its first chunk proves it holds the only slot, and
/metrics after the refusal proves it still did, whatever the speed of the machine.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import running_server

CONTEXT = 32768
BODY_LIMIT = 1024
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.support import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-long")
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT  # room for a request that outlasts the test
    (model / "config.json").write_text(json.dumps(config))
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ("--model", str(model), "--served-model-name", "tiny", "--device", "cpu")
    args += ("--max-model-len", str(CONTEXT), "--max-num-seqs", "1", "--max-queue", "0")
    args += ("--max-body-bytes", str(BODY_LIMIT))
    with running_server(*args, log=log) as base:
        yield base


def chat(**overrides: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": HELLO, "max_tokens": 2} | overrides


def gauge(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found is not None, text
    return float(found.group(1))


def wait_idle(base: str, within: float = 60.0) -> None:
    """Wait until the engine reports no sequence running (it frees a slot between steps)."""
    deadline = time.monotonic() + within
    while gauge(base, "largeforge_num_requests_running") != 0:
        assert time.monotonic() < deadline, "the engine never went idle"
        time.sleep(0.05)


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return dict(error)


def test_an_idle_engine_with_no_waiting_line_serves(server: str) -> None:
    wait_idle(server)
    reply = httpx.post(f"{server}/v1/chat/completions", json=chat(), timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] is not None


def test_a_busy_engine_with_no_waiting_line_answers_429_with_retry_after(server: str) -> None:
    wait_idle(server)
    endless = chat(max_tokens=CONTEXT - 100, ignore_eos=True, stream=True)
    url = f"{server}/v1/chat/completions"
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=endless) as holder:
        assert holder.status_code == 200  # sent once its first token exists: it holds the slot
        lines = holder.iter_lines()  # kept: dropping it would close the connection
        assert next(lines).startswith("data: ")
        for stream in (False, True):
            refused = httpx.post(url, json=chat(stream=stream), timeout=60)
            error = assert_openai_error(refused, 429, "queue_full")
            assert error["type"] == "rate_limit_error"
            assert "no waiting line" in error["message"]
            assert int(refused.headers["retry-after"]) >= 1
        # Still generating after both refusals, so it held the slot while they came.
        assert gauge(server, "largeforge_num_requests_running") == 1
        assert gauge(server, "largeforge_num_requests_waiting") == 0
    wait_idle(server)  # the holder hung up: its slot is free again and the next request runs
    assert httpx.post(url, json=chat(), timeout=60).status_code == 200


def test_a_body_over_max_body_bytes_is_413(server: str) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * (2 * BODY_LIMIT)}])
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    error = assert_openai_error(response, 413, "request_too_large")
    assert error["type"] == "invalid_request_error"
    small = httpx.post(f"{server}/v1/chat/completions", json=chat(), timeout=60)
    assert small.status_code == 200, small.text
