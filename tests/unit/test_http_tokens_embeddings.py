"""`/tokenize`, `/detokenize` (vLLM's shapes) and `/v1/embeddings` (OpenAI's) over fakes."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from largeforge.entrypoints.http.app import create_app
from tests.fakes import FakeEmbeddingEncoder
from tests.fuzz_support import served_model
from tests.unit.test_http_api import assert_openai_error

KEY = "sk-test-key"
EMBEDDER = "mini-embed"


@pytest.fixture
def encoder() -> FakeEmbeddingEncoder:
    return FakeEmbeddingEncoder(dimensions=8, max_input_tokens=6)


@pytest.fixture
def client(container: Any, encoder: FakeEmbeddingEncoder) -> Iterator[TestClient[Any]]:
    container.embedding_encoders.override({EMBEDDER: encoder})
    with TestClient(create_app(container, load_in_background=False)) as test_client:
        yield test_client


# -- /tokenize and /detokenize ----------------------------------------------------------------


def test_tokenize_a_prompt_in_vllms_shape(client: TestClient[Any], fakes: dict[str, Any]) -> None:
    engine = fakes["engine"]
    plain = client.post("/tokenize", json={"prompt": "a b c", "add_special_tokens": False})
    assert plain.status_code == 200, plain.text
    ids = engine.tokenize("a b c")
    assert plain.json() == {"count": 3, "max_model_len": 64, "tokens": ids, "token_strs": None}
    # vLLM's default adds the special tokens (the fake's <bos>); the model may be named
    special = client.post(
        "/tokenize", json={"model": "fake-model", "prompt": "a b c", "return_token_strs": True}
    ).json()
    assert special["tokens"] == engine.tokenize("a b c", add_special_tokens=True)
    assert special["token_strs"] == ["<bos>", "a", "b", "c"]
    assert special["count"] == 4


def test_tokenize_without_special_tokens_counts_what_a_completion_counts(
    client: TestClient[Any],
) -> None:
    prompt = "the quick brown fox"
    tokens = client.post("/tokenize", json={"prompt": prompt, "add_special_tokens": False})
    completion = client.post(
        "/v1/completions", json={"model": "fake-model", "prompt": prompt, "max_tokens": 1}
    )
    assert tokens.json()["count"] == completion.json()["usage"]["prompt_tokens"]


def test_tokenize_messages_gives_the_chat_completions_prompt(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello big world"},
    ]
    tokens = client.post("/tokenize", json={"messages": messages, "return_token_strs": True})
    assert tokens.status_code == 200, tokens.text
    chat = client.post(
        "/v1/chat/completions", json={"model": "fake-model", "messages": messages, "max_tokens": 1}
    )
    prompt_ids = list(fakes["engine"].requests[-1][0])
    body = tokens.json()
    assert body["tokens"] == prompt_ids
    assert body["count"] == chat.json()["usage"]["prompt_tokens"] == len(prompt_ids)
    assert body["token_strs"][:2] == ["<system>", "be"]
    assert body["token_strs"][-1] == "<assistant>"  # the generation prompt


def test_tokenize_messages_renders_the_tools(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    body = {"messages": [{"role": "user", "content": "weather?"}], "tools": [tool]}
    assert client.post("/tokenize", json=body).status_code == 200
    assert fakes["engine"].rendered_tools[-1] == ("get_weather",)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "a"}], "add_generation_prompt": False},
         "add_generation_prompt"),
        ({"messages": [{"role": "user", "content": "a"}], "continue_final_message": True},
         "continue_final_message"),
        ({"messages": [{"role": "user", "content": "a"}], "add_special_tokens": True},
         "add_special_tokens"),
        ({"messages": []}, "messages"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
        ({"prompt": "a", "chat_template": "{{x}}"}, "chat_template"),
        ({}, "prompt"),
        ({"model": "", "prompt": "a"}, "model"),  # not a model id; null picks the default
    ],
)  # fmt: skip
def test_tokenize_refuses_what_it_cannot_honour(
    client: TestClient[Any], body: dict[str, Any], param: str
) -> None:
    assert_openai_error(client.post("/tokenize", json=body), 400, param)


def test_detokenize_reads_back_the_tokens_with_special_tokens(
    client: TestClient[Any], fakes: dict[str, Any]
) -> None:
    ids = client.post("/tokenize", json={"prompt": "a b"}).json()["tokens"]
    assert client.post("/detokenize", json={"tokens": ids}).json() == {"prompt": "<bos> a b"}
    eos = client.post("/detokenize", json={"model": "fake-model", "tokens": [0]})
    assert eos.json() == {"prompt": "<eos>"}  # kept, as vLLM keeps them
    assert client.post("/detokenize", json={"tokens": []}).json() == {"prompt": ""}
    assert_openai_error(client.post("/detokenize", json={"model": "", "tokens": []}), 400, "model")


@pytest.mark.parametrize(
    ("tokens", "param"), [([1, 1000], "tokens"), ([-1], "tokens.0"), (["a"], "tokens.0")]
)
def test_detokenize_refuses_ids_outside_the_vocabulary(
    client: TestClient[Any], tokens: list[Any], param: str
) -> None:
    error = assert_openai_error(client.post("/detokenize", json={"tokens": tokens}), 400, param)
    assert error["type"] == "invalid_request_error"


def test_unknown_models_are_404(client: TestClient[Any]) -> None:
    for path, body in [
        ("/tokenize", {"model": "nope", "prompt": "a"}),
        ("/detokenize", {"model": "nope", "tokens": [1]}),
        ("/v1/embeddings", {"model": "nope", "input": "a"}),
        ("/v1/embeddings", {"model": "fake-model", "input": "a"}),  # a chat model, not an encoder
        ("/tokenize", {"model": EMBEDDER, "prompt": "a"}),  # an encoder, not a chat model
    ]:
        error = assert_openai_error(client.post(path, json=body), 404, "model")
        assert error["code"] == "model_not_found", (path, body)


def test_the_new_routes_are_behind_the_api_keys(
    container: Any, encoder: FakeEmbeddingEncoder
) -> None:
    container.embedding_encoders.override({EMBEDDER: encoder})
    app = create_app(container, api_keys=[KEY], load_in_background=False)
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as client:
        for path, body in [
            ("/tokenize", {"prompt": "a"}),
            ("/detokenize", {"tokens": [1]}),
            ("/v1/embeddings", {"model": EMBEDDER, "input": "a"}),
        ]:
            assert_openai_error(client.post(path, json=body), 401)
            assert client.post(path, json=body, headers=auth).status_code == 200, path


# -- /v1/embeddings ---------------------------------------------------------------------------


def test_models_lists_the_embedding_model_after_the_chat_model(client: TestClient[Any]) -> None:
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["fake-model", EMBEDDER]
    assert data[1]["root"] == EMBEDDER


def test_embeddings_of_texts_in_openais_shape(
    client: TestClient[Any], encoder: FakeEmbeddingEncoder
) -> None:
    texts = ["red apple", "green apple pie", "x"]
    response = client.post("/v1/embeddings", json={"model": EMBEDDER, "input": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == EMBEDDER
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    ids = [encoder.tokenize(t) for t in texts]
    assert [d["embedding"] for d in body["data"]] == encoder.vectors(ids)
    tokens = sum(len(i) for i in ids)  # [CLS] and [SEP] count, as the encoder reads them
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    for d in body["data"]:
        assert math.isclose(sum(v * v for v in d["embedding"]), 1.0)


def test_a_single_text_and_token_id_inputs(
    client: TestClient[Any], encoder: FakeEmbeddingEncoder
) -> None:
    one = client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "red apple"}).json()
    assert len(one["data"]) == 1
    ids = encoder.tokenize("red apple")
    by_ids = client.post("/v1/embeddings", json={"model": EMBEDDER, "input": ids}).json()
    assert by_ids["data"][0]["embedding"] == one["data"][0]["embedding"]
    assert by_ids["usage"]["prompt_tokens"] == len(ids)
    lists = client.post("/v1/embeddings", json={"model": EMBEDDER, "input": [ids, [5, 6]]})
    assert [d["index"] for d in lists.json()["data"]] == [0, 1]
    assert encoder.batches[-1] == [tuple(ids), (5, 6)]  # token ids are taken as they are


def test_base64_is_little_endian_float32_of_the_same_vectors(client: TestClient[Any]) -> None:
    body = {"model": EMBEDDER, "input": ["red apple", "pie"]}
    floats = client.post("/v1/embeddings", json=body).json()["data"]
    packed = client.post("/v1/embeddings", json=body | {"encoding_format": "base64"}).json()
    for plain, encoded in zip(floats, packed["data"], strict=True):
        raw = base64.b64decode(encoded["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        expected = struct.unpack(f"<{len(raw) // 4}f", struct.pack("<8f", *plain["embedding"]))
        assert decoded == expected


def test_dimensions_only_the_models_own(client: TestClient[Any]) -> None:
    body = {"model": EMBEDDER, "input": "a"}
    assert client.post("/v1/embeddings", json=body | {"dimensions": 8}).status_code == 200
    response = client.post("/v1/embeddings", json=body | {"dimensions": 4})
    error = assert_openai_error(response, 400, "dimensions")
    assert "8-dimensional" in error["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": ["a", ""]}, "input"),
        ({"input": ["a", [1]]}, "input"),
        ({"input": [1, -1]}, "input"),
        ({"input": [1, 100]}, "input"),  # the fake's vocabulary is 100 ids
        ({"input": 5}, "input"),
        ({"input": ["a"] * 2049}, "input"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"truncate_prompt_tokens": 3}, "truncate_prompt_tokens"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_embedding_bodies_are_400_naming_the_field(
    client: TestClient[Any], change: dict[str, Any], param: str
) -> None:
    body = {"model": EMBEDDER, "input": "a"} | change
    assert_openai_error(client.post("/v1/embeddings", json=body), 400, param)


def test_an_input_over_the_window_is_refused_not_cut(
    client: TestClient[Any], encoder: FakeEmbeddingEncoder
) -> None:
    fits = "one two three four"  # + [CLS] [SEP] = 6, the window
    assert client.post("/v1/embeddings", json={"model": EMBEDDER, "input": fits}).status_code == 200
    response = client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": ["ok", fits + " five"]}
    )
    error = assert_openai_error(response, 400, "input")
    assert error["code"] == "context_length_exceeded"
    assert "input 1 has 7 tokens" in error["message"]


def test_metrics_count_the_new_endpoints(client: TestClient[Any]) -> None:
    client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "a"})
    client.post("/tokenize", json={"prompt": "a"})
    client.post("/detokenize", json={"tokens": [5000]})
    text = client.get("/metrics").text
    assert 'largeforge_requests_total{endpoint="/v1/embeddings",status="200"} 1.0' in text
    assert 'largeforge_requests_total{endpoint="/tokenize",status="200"} 1.0' in text
    assert 'largeforge_requests_total{endpoint="/detokenize",status="400"} 1.0' in text
    assert f'largeforge_prompt_tokens_total{{model="{EMBEDDER}"}} 3.0' in text


def test_without_an_embedding_model_every_embedding_request_is_404(container: Any) -> None:
    with TestClient(create_app(container, load_in_background=False)) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake-model"]
        response = client.post("/v1/embeddings", json={"model": "anything", "input": "a"})
        assert_openai_error(response, 404, "model")


# -- schema-driven fuzz (tests/fuzz_support.py) -------------------------------------------------


def _narrow(schema: Any, model: str, vocab_size: int) -> None:
    """`model` the one served for the route; token ids below the vocabulary size."""
    if isinstance(schema, dict):
        properties = schema.get("properties", {})
        if "model" in properties:
            properties["model"] = served_model(properties["model"], [model])
        for name in ("input", "tokens"):
            if name in properties:
                _bound(properties[name], vocab_size)
        if "dimensions" in properties:  # the encoder's own, which the document cannot know
            properties["dimensions"] = {"enum": [8, None]}
        for value in schema.values():
            _narrow(value, model, vocab_size)
    elif isinstance(schema, list):
        for value in schema:
            _narrow(value, model, vocab_size)


def _bound(schema: Any, vocab_size: int) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema["maximum"] = vocab_size - 1
        for value in schema.values():
            _bound(value, vocab_size)
    elif isinstance(schema, list):
        for value in schema:
            _bound(value, vocab_size)


@pytest.mark.parametrize(
    ("path", "model", "vocab_size"),
    [("/v1/embeddings", EMBEDDER, 100), ("/tokenize", "fake-model", 1000),
     ("/detokenize", "fake-model", 1000)],
)  # fmt: skip
def test_schema_driven_bodies_get_documented_answers_never_a_5xx(
    container: Any, path: str, model: str, vocab_size: int
) -> None:
    import schemathesis

    from tests.fuzz_support import fuzz

    container.embedding_encoders.override({EMBEDDER: FakeEmbeddingEncoder(max_input_tokens=4096)})
    app = create_app(container, load_in_background=False, max_body_bytes=64 * 1024)
    with TestClient(app) as client:
        doc = client.get("/schema/openapi.json").json()
        operation = doc["paths"][path]["post"]
        _narrow(operation["requestBody"], model, vocab_size)
        tally = fuzz(
            client, schemathesis.openapi.from_dict(doc), path, examples=150, max_body=64 * 1024
        )
        oversize = client.post(path, json={"model": model, "user": "x" * 64 * 1024})
        assert_openai_error(oversize, 413)
    assert tally.valid_accepted() >= 0.9, tally
