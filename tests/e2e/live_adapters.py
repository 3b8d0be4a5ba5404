"""Loading and unloading a LoRA adapter on a running server under load, the same way on both
engines: base-model traffic never stops, the adapter answers as soon as it is loaded, a long
adapter stream running across the unload finishes with the adapter's own tokens, and
`/v1/models` follows every change. Used by test_live_adapters.py and test_vllm_lora.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai

ASK = [{"role": "user", "content": "Tell me about the sea."}]


def models(base: str, headers: dict[str, str]) -> list[tuple[str, str | None]]:
    data = httpx.get(f"{base}/v1/models", headers=headers, timeout=10).json()["data"]
    return [(m["id"], m["parent"]) for m in data]


def load_and_unload_under_load(
    base: str, model: str, adapter: Path, *, api_key: str = "none", long_tokens: int = 96
) -> dict[str, Any]:
    """Run the scenario; returns what it saw (every request's failures are asserted here)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)
    stop = threading.Event()
    failures: list[str] = []
    served = {"base": 0}
    started = threading.Event()

    def base_traffic() -> None:
        while not stop.is_set():
            try:
                reply = client.chat.completions.create(model=model, messages=ASK, max_tokens=4)  # type: ignore[arg-type]
                assert reply.choices[0].finish_reason in ("length", "stop")
                served["base"] += 1
                started.set()
            except Exception as exc:  # every failure is reported at the end
                failures.append(repr(exc))

    def long_answer() -> Any:
        return client.chat.completions.create(
            model="live", messages=ASK, max_tokens=long_tokens, temperature=0,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    def unload() -> httpx.Response:
        return httpx.post(
            f"{base}/v1/unload_lora_adapter", headers=headers, timeout=300,
            json={"lora_name": "live"},
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        traffic = [pool.submit(base_traffic) for _ in range(2)]
        try:
            assert started.wait(120), failures
            before = models(base, headers)
            assert (model, None) in before
            loaded = httpx.post(
                f"{base}/v1/load_lora_adapter", headers=headers, timeout=120,
                json={"lora_name": "live", "lora_path": str(adapter)},
            )  # fmt: skip
            assert loaded.status_code == 200, loaded.text
            assert models(base, headers) == [*before, ("live", model)]
            expected = long_answer().choices[0].message.content
            base_text = client.chat.completions.create(
                model=model, messages=ASK, max_tokens=long_tokens, temperature=0,  # type: ignore[arg-type]
                extra_body={"ignore_eos": True},
            ).choices[0].message.content  # fmt: skip
            assert expected != base_text  # the adapter changes the answer
            stream = client.chat.completions.create(
                model="live", messages=ASK, max_tokens=long_tokens, temperature=0, stream=True,  # type: ignore[arg-type]
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            # the answer has begun (the server sends headers after the first token): the
            # unload starts while it runs, and must let it finish on the adapter
            unloading = pool.submit(unload)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text == expected
            assert unloading.result().status_code == 200, unloading.result().text
            assert models(base, headers) == before
            gone = httpx.post(
                f"{base}/v1/chat/completions", headers=headers, timeout=30,
                json={"model": "live", "messages": ASK, "max_tokens": 2},
            )  # fmt: skip
            assert gone.status_code == 404, gone.text
        finally:
            stop.set()
            for worker in traffic:
                worker.result()
    assert failures == []
    return {"base_requests": served["base"]}
