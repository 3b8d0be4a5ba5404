"""`largeforge serve`: the OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
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
    lora: list[str] | None = None,
    enable_lora: bool = False,
    max_loras: int = 4,
    max_lora_rank: int = 16,
    backend: Literal["transformers", "vllm"] = "transformers",
    max_num_seqs: int = 16,
    max_queue: int = 256,
    on_overflow: Literal["reject", "truncate-max-tokens"] = "reject",
    max_body_bytes: int = 4 * 1024 * 1024,
    embedding_model: str | None = None,
    tool_call_parser: Literal["hermes", "llama3_json", "mistral", "pythonic"] | None = None,
) -> int:
    """Serve a model over an OpenAI-compatible API.

    Routes: /v1/models, /v1/completions, /v1/chat/completions (streaming with SSE),
    /v1/embeddings (with --embedding-model), /v1/load_lora_adapter and
    /v1/unload_lora_adapter (with --enable-lora), /tokenize, /detokenize, /health, /metrics
    (Prometheus).

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
        auto (bf16 on a CPU with amx_bf16 or avx512_bf16 and on GPUs that have it, fp16 on
        older GPUs, else fp32; the start-up log says which and why), float32, bfloat16 or
        float16.
    max_model_len
        Context window to enforce (default: the model's).
    lora
        A LoRA adapter served as its own model id, as NAME=PATH (e.g. a run's adapter
        directory); repeat for several.
    enable_lora
        Allow loading and unloading adapters while serving: POST /v1/load_lora_adapter
        ({"lora_name", "lora_path"}) and /v1/unload_lora_adapter ({"lora_name"}), vLLM's
        endpoints, behind the API keys. On the transformers engine this keeps the linears
        unpacked (slower decoding).
    max_loras
        vllm: adapters loaded at run time that are kept at once.
    max_lora_rank
        vllm: the highest adapter rank that can be loaded at run time.
    backend
        transformers (continuous batching, any device) or vllm (needs the vllm extra).
    max_num_seqs
        Sequences generated together in one batch.
    max_queue
        Requests allowed to wait while every batch slot is taken (0: none wait); beyond it,
        429 with Retry-After.
    on_overflow
        When prompt + max_tokens exceed the context: reject (400) or truncate-max-tokens.
        The prompt is never cut.
    max_body_bytes
        Largest request body accepted (larger gets 413).
    embedding_model
        An embedding model served beside the chat model on /v1/embeddings, under this id:
        all-minilm-l6-v2 (the packaged all-MiniLM-L6-v2), a local directory or a Hugging Face
        id.
    tool_call_parser
        How the model writes tool calls: hermes (Qwen-style <tool_call> JSON; also the
        fallback for templates without tools), llama3_json, mistral or pythonic. Default:
        chosen from the chat template.
    """
    import structlog
    import uvicorn

    from largeforge.container import Container
    from largeforge.entrypoints.http.app import create_app
    from largeforge.entrypoints.http.listen import bind

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
            "lora": _adapters(lora or []),
            "enable_lora": enable_lora,
            "max_loras": max_loras,
            "max_lora_rank": max_lora_rank,
            "backend": backend,
            "max_num_seqs": max_num_seqs,
            "max_queue": max_queue,
            "on_overflow": on_overflow,
            "max_body_bytes": max_body_bytes,
            "embedding_model": embedding_model,
            "tool_call_parser": tool_call_parser,
        },
        "serve options",
    )
    container = Container.from_settings(Settings(serve=settings))
    if settings.embedding_model in (settings.model_id, *settings.lora):
        raise ConfigError(
            f"--embedding-model {settings.embedding_model}: that id is already a served model"
        )
    container.embedding_model_dir()  # fail fast on a bad reference (no weights are loaded)
    container.model_resolver().resolve(settings.model)  # fail fast on a bad reference
    app = create_app(container, api_keys=settings.api_keys, max_body_bytes=settings.max_body_bytes)
    # Bind first so the real address (port 0 picks a free one) can be announced.
    sock = bind(settings.host, settings.port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}/v1"
    structlog.get_logger(__name__).info("listening", url=url, model=settings.model_id)
    print(f"Serving {settings.model_id} at {url}", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _adapters(specs: list[str]) -> dict[str, str]:
    """`NAME=PATH` pairs; the path must be a directory holding a LoRA adapter."""
    from pathlib import Path

    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--lora expects NAME=PATH, got '{spec}'")
        if not (Path(path) / "adapter_config.json").is_file():
            raise ConfigError(f"--lora {name}: no adapter_config.json in {path}")
        adapters[name] = str(Path(path).resolve())
    return adapters
