"""Whatever JSON arrives, the API answers 2xx or 4xx in the OpenAI error shape, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from largeforge.entrypoints.http.app import create_app

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "top_k", "n", "stop", "seed", "logprobs", "top_logprobs", "echo", "presence_penalty",
    "frequency_penalty", "stream", "stream_options", "user", "unknown_field",
]  # fmt: skip
BASE = {"model": "fake-model", "messages": [{"role": "user", "content": "a b"}], "prompt": "a b"}
BIG_NUMBERS = st.sampled_from([-1, 0, 10**9, 2**64, -(2**70), 1e308, -1e-9, 21, 17])


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Any]]:
    from tests.conftest import make_container

    container = make_container()
    with TestClient(create_app(container, load_in_background=False)) as test_client:
        yield test_client


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
    changes=st.dictionaries(st.sampled_from(FIELDS), JSON | BIG_NUMBERS, max_size=3),
)
def test_any_field_values_get_a_4xx_not_a_500(
    client: TestClient[Any], path: str, changes: dict[str, Any]
) -> None:
    body = {k: v for k, v in BASE.items() if (k != "prompt") == path.endswith("chat/completions")}
    check(client.post(path, json=body | changes))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=40) | JSON.map(lambda v: str(v).encode()))
def test_malformed_bodies_get_a_4xx(client: TestClient[Any], raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    check(client.post("/v1/chat/completions", content=raw, headers=headers))
