"""Schema-driven fuzz of the router's POST endpoints over fake replicas.

Bodies are generated from the router's own OpenAPI document (see tests/fuzz_support.py), with
the router's and its experts' names as `model`: whatever arrives, the answer is documented, in
the OpenAI shape, and never a 5xx; most bodies reach an expert.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.fuzz_support import fuzz, served_schema
from tests.router_fakes import FakeReplicas
from tests.unit.test_router_http import router_app

MAX_BODY = 64 * 1024
EXAMPLES = 500


@pytest.fixture(scope="module")
def routed() -> Iterator[tuple[TestClient[Any], FakeReplicas]]:
    replicas = FakeReplicas()
    with TestClient(router_app(replicas, max_body_bytes=MAX_BODY)) as test_client:
        yield test_client, replicas


def received(replicas: FakeReplicas) -> int:
    return sum(len(client.received) for client in replicas.clients.values())


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_schema_driven_bodies_get_documented_answers_never_a_5xx(
    routed: tuple[TestClient[Any], FakeReplicas], path: str
) -> None:
    client, replicas = routed
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    schema = served_schema(client.get("/schema/openapi.json").json(), models, vocab_size=1000)
    before = received(replicas)
    # negative bodies are not all refused here: the fake experts do not validate what the
    # router passes on (a real expert refuses it, and the router passes its 4xx through)
    tally = fuzz(client, schema, path, examples=EXAMPLES, max_body=MAX_BODY, rejects=False)
    print(path, tally)  # shown with -s
    assert tally.examples >= EXAMPLES, tally
    assert tally.statuses[413] > 0, tally
    assert tally.share_2xx() >= 0.6, tally
    assert tally.valid_accepted() >= 0.9, tally
    assert received(replicas) - before >= 0.6 * tally.examples, tally
