"""OpenAI-compatibility cases with the official `openai` client against a real server process.

Parametrized over the engines: `transformers`, and `vllm` served from the `.venv-vllm` environment
that `make test` builds (see tests/e2e/vllm_env.py: a missing environment fails, it does not skip).
The model is the tiny random Llama, so the cases check the protocol, not the prose.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.server import running_server
from tests.e2e.vllm_env import START_TIMEOUT, vllm_python

KEY = "sk-conformance"
ENGINES = ["transformers", "vllm"]
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with 64-wide attention heads, which vLLM's CPU kernels support."""
    from tests.support import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-hd64", head_dim=64)


@pytest.fixture(scope="module", params=ENGINES)
def server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    vllm = request.param == "vllm"
    python, timeout = (vllm_python(), START_TIMEOUT) if vllm else (sys.executable, 240.0)
    log = tmp_path_factory.mktemp("serve") / f"{request.param}.log"
    args = ("--model", str(tiny_model_dir), "--served-model-name", "tiny", "--api-key", KEY)
    args += ("--backend", request.param, "--max-model-len", "256", "--max-num-seqs", "4")
    args += ("--dtype", "float32")  # logprobs are compared with fp32 references
    with running_server(*args, log=log, timeout=timeout, python=python) as base:
        yield base, request.param


@pytest.fixture
def client(server: tuple[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0)


def prompt_tokens(tiny_model_dir: Path, messages: list[dict[str, str]]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_usage_is_exact(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=5, temperature=0
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_tokens(tiny_model_dir, HELLO)
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_equals_non_stream_with_one_finish_and_a_usage_chunk(
    client: openai.OpenAI,
) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "messages": HELLO, "max_tokens": 20}
    plain = client.chat.completions.create(**kwargs, temperature=0)
    chunks = list(
        client.chat.completions.create(
            **kwargs, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_options_without_stream_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(
            model="tiny", messages=HELLO, stream_options={"include_usage": True}
        )


def test_n_gives_indexed_choices_and_seeds_reproduce(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "messages": HELLO, "max_tokens": 8, "seed": 5}
    first = client.chat.completions.create(**kwargs, n=3, temperature=1.0)
    assert [c.index for c in first.choices] == [0, 1, 2]
    again = client.chat.completions.create(**kwargs, n=3, temperature=1.0)
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]


def test_stop_strings_are_cut(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=30, temperature=0
    )
    text = plain.choices[0].message.content or ""
    assert len(text) > 4
    stop = text[2:4]
    cut = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_logprob_limits_and_the_server_keeps_working(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=3, temperature=0, logprobs=True, top_logprobs=20
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    assert all(len(t.top_logprobs) == 20 for t in content)
    assert all(t.logprob <= 0 for t in content)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny", messages=HELLO, logprobs=True, top_logprobs=21)
    assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).choices


def test_echo_returns_prompt_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="tiny", prompt="The cat sat on the", max_tokens=1, echo=True, logprobs=1,
        temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.text.startswith("The cat sat on the")
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.token_logprobs is not None
    assert logprobs.token_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert logprobs.tokens is not None
    assert len(logprobs.tokens) == reply.usage.prompt_tokens + 1  # type: ignore[union-attr]


def test_echo_logprobs_are_the_models_own_for_every_prompt_token(
    client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    """What lm-evaluation-harness scores: every prompt token's log-probability, none lost."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model_dir)("The cat sat on the mat because it")
    ids = ids["input_ids"]
    reply = client.completions.create(
        model="tiny", prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.token_logprobs is not None
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(ids)
    assert len(logprobs.token_logprobs) == len(ids) + 1  # the prompt, then the generated token
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(len(ids) - 1), ids[1:]]
    assert logprobs.token_logprobs[0] is None
    assert logprobs.token_logprobs[1 : len(ids)] == pytest.approx(expected.tolist(), abs=1e-3)


def test_unknown_model_overflow_and_missing_key(client: openai.OpenAI, server: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match=r"maximum context length is 256") as info:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=400)
    assert re.search(r"\d+ in the prompt", str(info.value))
    anonymous = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    assert httpx.get(f"{server[0]}/health").status_code == 200


def test_clients_that_disconnect_free_the_engine(client: openai.OpenAI, server: Any) -> None:
    """Streams hung up after their first chunk, and unstreamed requests dropped while the
    server reports their sequences in the engine: /metrics shows every disconnect seen as such
    (499), their sequences out of the waiting line, and the engine idle afterwards. Nothing
    waits on a clock: the dropped requests hold 64 sequences of 200 tokens for 4 slots."""
    base, headers = server[0], {"Authorization": f"Bearer {KEY}"}
    long = {"model": "tiny", "messages": HELLO, "max_tokens": 200, "ignore_eos": True}

    def sample(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    async def read_metrics(http: httpx.AsyncClient) -> dict[str, float]:
        text = (await http.get("/metrics")).text
        dropped = 'largeforge_requests_total{endpoint="/v1/chat/completions",status="499"}'
        waiting = sample(text, "largeforge_num_requests_waiting")
        running = sample(text, "largeforge_num_requests_running")
        return {
            "in_flight": running + waiting,
            "waiting": waiting,
            "dropped": sample(text, dropped),
        }

    async def until(http: httpx.AsyncClient, what: str, value: float) -> dict[str, float]:
        deadline = time.monotonic() + 120  # a bound for failing, not a synchronisation
        while (seen := await read_metrics(http))[what] != value:
            assert time.monotonic() < deadline, f"{what} stayed {seen[what]}, expected {value}"
            await asyncio.sleep(0.02)
        return seen

    async def hang_up(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", "/v1/chat/completions", json=long | {"stream": True}) as r:
            assert r.status_code == 200  # its first token exists: the sequence is in the engine
            async for line in r.aiter_lines():
                assert line.startswith("data: ")
                break  # leaving the block closes the connection mid-stream

    async def crowd() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            await until(http, "in_flight", 0)
            await asyncio.gather(*(hang_up(http) for _ in range(4)))
            await until(http, "in_flight", 0)
            dropped = (await read_metrics(http))["dropped"]
            posts = [
                asyncio.create_task(http.post("/v1/chat/completions", json=long | {"n": 16}))
                for _ in range(4)
            ]
            await until(http, "in_flight", 4 * 16)  # every choice of every request admitted
            for post in posts:
                post.cancel()  # the client goes away mid-request
            await asyncio.gather(*posts, return_exceptions=True)
            seen = await until(http, "dropped", dropped + 4)  # seen as disconnects, not answered
            # Their sequences left the waiting line before the server counted the disconnect
            # (running ones leave at the engine's next step).
            assert seen["waiting"] == 0
            await until(http, "in_flight", 0)

    asyncio.run(crowd())
    reply = client.with_options(timeout=60).chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=4
    )
    assert reply.choices
    assert sample(httpx.get(f"{base}/metrics").text, "largeforge_num_requests_running") == 0
