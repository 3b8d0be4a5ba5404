"""`ExpertClient` over HTTP: a pooled httpx client talking to an OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from largeforge.domain.errors import ReplicaError


class HttpExpertClient:
    """One replica at `base_url` (ending in `/v1`). Connection failures, timeouts, broken
    streams and HTTP errors all become `ReplicaError` (status None when nothing was answered).

    Pass `transport` to talk to an in-process ASGI app (`httpx.ASGITransport`) instead.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 300.0,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def models(self) -> list[str]:
        try:
            response = await self._http.get("/models")
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _raise_for_status(response, self.base_url)
        return [m["id"] for m in response.json().get("data", [])]

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = await self._http.post(path, json=dict(body))
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _raise_for_status(response, self.base_url)
        try:
            payload: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ReplicaError(f"{self.base_url} answered with invalid JSON") from exc
        return payload

    async def stream(
        self, path: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async with self._http.stream("POST", path, json=dict(body)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response, self.base_url)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event:
                        message = event["error"].get("message", "error event")
                        raise ReplicaError(
                            f"{self.base_url} failed mid-stream: {message}", body=event
                        )
                    yield event
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from exc
        except json.JSONDecodeError as exc:
            raise ReplicaError(f"{self.base_url} sent an invalid stream chunk") from exc
        raise ReplicaError(f"{self.base_url} ended the stream without [DONE]")

    async def aclose(self) -> None:
        await self._http.aclose()


def _unreachable(url: str, exc: httpx.HTTPError) -> ReplicaError:
    return ReplicaError(f"{url} did not answer: {type(exc).__name__}: {exc}".rstrip(": "))


def _raise_for_status(response: httpx.Response, url: str) -> None:
    if response.status_code < 400:
        return
    body: dict[str, Any] | None
    try:
        parsed = response.json()
        body = parsed if isinstance(parsed, dict) else None
    except ValueError:
        body = None
    message = (body or {}).get("error", {}).get("message") if body else None
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    raise ReplicaError(
        f"{url} answered {response.status_code}: {message or response.text[:200]}",
        status=response.status_code,
        body=body,
        retry_after=retry_after,
    )
