"""The served side of `largeforge eval --fidelity`: `largeforge serve`'s own app, run with
uvicorn on a private loopback port in a background thread, asked the probe prompts at
temperature 0 through `/v1/chat/completions`, then stopped.

It lives in the entrypoints because it runs the entrypoint's app; the use case sees it as the
`ServedProbe` port.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from largeforge.config import ServeSettings, Settings
from largeforge.domain.datasets import Message
from largeforge.domain.errors import ConfigError
from largeforge.domain.fidelity import ProbeAnswer

MODEL_ID = "fidelity-probe"
FIDELITY_DTYPE = "float32"
"""Both sides of a fidelity check compute in fp32: it checks the model, not a dtype's rounding."""
ADAPTER_ID = "fidelity-adapter"


class HttpServedProbe:
    """The `ServedProbe` port over a real `largeforge serve` app (transformers engine)."""

    def __init__(self, *, load_timeout_s: float = 300, request_timeout_s: float = 300) -> None:
        self._load_timeout_s = load_timeout_s
        self._request_timeout_s = request_timeout_s

    def answers(
        self,
        model_dir: str,
        probes: Sequence[Sequence[Message]],
        max_tokens: int,
        adapter: str | None = None,
    ) -> list[ProbeAnswer]:
        serve = ServeSettings(
            model=model_dir,
            served_model_name=MODEL_ID,
            dtype=FIDELITY_DTYPE,
            lora={ADAPTER_ID: adapter} if adapter else {},
        )
        model = ADAPTER_ID if adapter else MODEL_ID
        with self._serving(serve) as base:
            return [self._ask(base, model, messages, max_tokens) for messages in probes]

    @contextmanager
    def _serving(self, serve: ServeSettings) -> Iterator[str]:
        import uvicorn

        from largeforge.container import Container
        from largeforge.entrypoints.http.app import create_app
        from largeforge.entrypoints.http.listen import listen

        app = create_app(Container.from_settings(Settings(serve=serve)))
        sock = listen("127.0.0.1", 0)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fidelity-probe", daemon=True
        )
        thread.start()
        try:
            self._wait_ready(base, thread, serve.model)
            yield base
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()

    def _wait_ready(self, base: str, thread: threading.Thread, model: str) -> None:
        """Return once /health answers 200; raise with the server's reason if loading failed."""
        deadline = time.monotonic() + self._load_timeout_s
        while True:
            if not thread.is_alive():
                raise ConfigError(f"the probe server for {model} stopped before it was ready")
            status, body = _get(f"{base}/health")
            if status == 200:
                return
            if body.get("status") == "error":
                raise ConfigError(f"cannot serve {model}: {body.get('error')}")
            if time.monotonic() > deadline:
                raise ConfigError(f"{model}: not served within {self._load_timeout_s:.0f}s")
            time.sleep(0.1)  # polling /health: the observable state of the load

    def _ask(
        self, base: str, model: str, messages: Sequence[Message], max_tokens: int
    ) -> ProbeAnswer:
        body = {
            "model": model,
            "messages": [m.as_dict() for m in messages],
            "temperature": 0,
            "max_tokens": max_tokens,
            "logprobs": True,
            "top_logprobs": 2,
        }
        request = urllib.request.Request(
            f"{base}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._request_timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ConfigError(f"the probe server answered {exc.code}: {detail}") from None
        return _probe_answer(answer)


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


def _probe_answer(answer: dict[str, Any]) -> ProbeAnswer:
    choice = answer["choices"][0]
    entries = (choice.get("logprobs") or {}).get("content") or []
    gaps = []
    for entry in entries:
        top = [t["logprob"] for t in entry.get("top_logprobs") or []]
        if len(top) < 2:
            break
        gaps.append(float(top[0] - top[1]))
    return ProbeAnswer(
        text=choice["message"].get("content") or "",
        completion_tokens=int(answer["usage"]["completion_tokens"]),
        stopped=choice["finish_reason"] == "stop",
        tokens=tuple(str(e["token"]) for e in entries),
        top2_gaps=tuple(gaps) if len(gaps) == len(entries) else (),
    )
