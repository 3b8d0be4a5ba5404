"""`largeforge serve`: the OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
import socket
from typing import Literal

from largeforge.config import DEFAULT_MODEL, ServeSettings, Settings, validate_settings
from largeforge.domain.errors import ConfigError


def serve(
    *,
    model: str = DEFAULT_MODEL,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: list[str] | None = None,
    served_model_name: str | None = None,
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    max_model_len: int | None = None,
) -> int:
    """Serve a model over an OpenAI-compatible API (/v1/models, /v1/chat/completions, /health).

    Parameters
    ----------
    model
        Model alias, local directory (e.g. runs/latest/merged) or Hugging Face id.
    host
        Interface to bind.
    port
        TCP port (0 picks a free one).
    api_key
        Accepted bearer key; repeat for several. Also read from LARGEFORGE_API_KEYS
        (comma-separated).
    served_model_name
        Model id clients use (default: the --model value).
    device
        auto, cpu, cuda or mps.
    dtype
        auto (fp32 on CPU, bf16/fp16 on GPUs), float32, bfloat16 or float16.
    max_model_len
        Context window to enforce (default: the model's).
    """
    import structlog
    import uvicorn

    from largeforge.container import Container
    from largeforge.entrypoints.http.app import create_app

    keys = list(api_key or [])
    keys += [k.strip() for k in os.environ.get("LARGEFORGE_API_KEYS", "").split(",") if k.strip()]
    settings = validate_settings(
        ServeSettings,
        {
            "model": model,
            "served_model_name": served_model_name,
            "host": host,
            "port": port,
            "api_keys": keys,
            "device": device,
            "dtype": dtype,
            "max_model_len": max_model_len,
        },
        "serve options",
    )
    container = Container.from_settings(Settings(serve=settings))
    container.model_resolver().resolve(settings.model)  # fail fast on a bad reference
    app = create_app(container, api_keys=settings.api_keys)
    # Bind first so the real address (port 0 picks a free one) can be announced.
    try:
        sock = socket.create_server((settings.host, settings.port))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}/v1"
    structlog.get_logger(__name__).info("listening", url=url, model=settings.model_id)
    print(f"Serving {settings.model_id} at {url}", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
