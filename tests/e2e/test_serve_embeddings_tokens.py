"""`largeforge serve --embedding-model all-minilm-l6-v2` as a real subprocess on loopback:
LangChain's `OpenAIEmbeddings` and the official client get the packaged MiniLM's own vectors,
and `/tokenize` / `/detokenize` agree with the chat completion's prompt."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from largeforge.adapters.embeddings.transformers import TransformersEmbeddingModel
from tests.e2e.server import running_server

pytestmark = pytest.mark.slow
KEY = "sk-embed"
MODEL = "tiny"
EMBEDDER = "all-minilm-l6-v2"
TEXTS = [
    "How do I reverse a list in Python?",
    "The integral of x squared is x cubed over three.",
    "Roast the vegetables for forty minutes.",
    "hi",
]


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ("--model", str(tiny_model_dir), "--served-model-name", MODEL, "--api-key", KEY)
    with running_server(*args, "--embedding-model", EMBEDDER, log=log) as url:
        yield url


@pytest.fixture(scope="module")
def reference() -> list[list[float]]:
    """The embedding adapter's own vectors of TEXTS, in this process."""
    vectors: list[list[float]] = TransformersEmbeddingModel().embed(TEXTS).vectors.tolist()
    return vectors


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_langchain_embed_documents_and_query(base: str, reference: list[list[float]]) -> None:
    embeddings = OpenAIEmbeddings(
        model=EMBEDDER,
        base_url=f"{base}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    documents = embeddings.embed_documents(TEXTS)
    assert len(documents) == len(TEXTS)
    for got, want in zip(documents, reference, strict=True):
        assert len(got) == 384
        assert cosine(got, want) > 0.99999
    query = embeddings.embed_query(TEXTS[0])
    assert cosine(query, reference[0]) > 0.99999


def test_official_client_floats_and_base64_and_models(
    base: str, reference: list[list[float]]
) -> None:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    packed = client.embeddings.create(model=EMBEDDER, input=TEXTS)  # base64 by default
    floats = client.embeddings.create(model=EMBEDDER, input=TEXTS, encoding_format="float")
    assert packed.model == EMBEDDER
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > len(TEXTS) * 2
    for a, b, want in zip(packed.data, floats.data, reference, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-6
        assert cosine(b.embedding, want) > 0.99999
    assert [m.id for m in client.models.list().data] == [MODEL, EMBEDDER]
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=EMBEDDER, input="x", dimensions=256)
    assert "384" in str(refused.value)


def test_tokenize_matches_the_chat_prompt_and_detokenize_reads_it_back(base: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    messages = [{"role": "user", "content": "Say hello to the world."}]
    tokens = httpx.post(
        f"{base}/tokenize",
        json={"model": MODEL, "messages": messages, "return_token_strs": True},
        headers=auth,
    ).json()
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=1,
    )
    assert reply.usage is not None
    assert tokens["count"] == reply.usage.prompt_tokens == len(tokens["tokens"])
    assert tokens["token_strs"][0] == "<|im_start|>"
    assert "Ġworld" in tokens["token_strs"]  # vocabulary entries, as vLLM shows them
    text = httpx.post(f"{base}/detokenize", json={"tokens": tokens["tokens"]}, headers=auth)
    assert text.json()["prompt"].startswith("<|im_start|>")
    assert text.json()["prompt"].endswith("<|im_start|>assistant\n")
    unauthorised = httpx.post(f"{base}/tokenize", json={"prompt": "a"})
    assert unauthorised.status_code == 401
