"""`POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter`: vLLM's routes, names and bodies.

A loaded adapter is a model id at once; an unloaded one is refused to new requests at once and
freed once its running requests finish (the answer waits for that). Both answer vLLM's plain
text on success and an OpenAI error otherwise (400: taken name, bad directory, loading off;
404: no such adapter).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from pydantic import Field, StrictInt

from largeforge.entrypoints.http.openapi import answer, documented
from largeforge.entrypoints.http.schemas import _Body, parse_body

TEXT = "text/plain"


class LoadLoraAdapterBody(_Body):
    """`POST /v1/load_lora_adapter` (needs `serve --enable-lora`)."""

    lora_name: str = Field(min_length=1, description="the model id the adapter is served as")
    lora_path: str = Field(min_length=1, description="a directory holding a PEFT LoRA adapter")
    base_model_name: str | None = Field(
        None, description="the base it goes on (default: the only one)"
    )
    load_inplace: bool = Field(False, description="accepted for vLLM's clients; ignored")


class UnloadLoraAdapterBody(_Body):
    """`POST /v1/unload_lora_adapter`."""

    lora_name: str = Field(min_length=1)
    lora_int_id: StrictInt | None = Field(None, description="accepted for vLLM's clients; ignored")


def _ok(description: str) -> Any:
    return answer(description, media={TEXT: {"type": "string"}})


@post(
    "/load_lora_adapter",
    status_code=200,
    operation_class=documented(
        {200: _ok("The adapter is served under its name.")},
        errors=(400, 401, 404, 413, 503),
        request=LoadLoraAdapterBody,
    ),
)
async def load_lora_adapter(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """Load a LoRA adapter and serve it as a model id of its own, at once."""
    from largeforge.entrypoints.http.app import _json, _serving

    body: LoadLoraAdapterBody = parse_body(LoadLoraAdapterBody, await _json(request))
    service = _serving(state).ready()
    await service.load_adapter(body.lora_name, body.lora_path, body.base_model_name)
    message = f"Success: LoRA adapter '{body.lora_name}' added successfully."
    return Response(message, media_type=TEXT)


@post(
    "/unload_lora_adapter",
    status_code=200,
    operation_class=documented(
        {200: _ok("The adapter's running requests finished and it was freed.")},
        errors=(400, 401, 404, 413, 503),
        request=UnloadLoraAdapterBody,
    ),
)
async def unload_lora_adapter(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """Stop serving an adapter: refused to new requests now, freed after its running ones."""
    from largeforge.entrypoints.http.app import _json, _serving

    body: UnloadLoraAdapterBody = parse_body(UnloadLoraAdapterBody, await _json(request))
    await _serving(state).ready().unload_adapter(body.lora_name)
    message = f"Success: LoRA adapter '{body.lora_name}' removed successfully."
    return Response(message, media_type=TEXT)
