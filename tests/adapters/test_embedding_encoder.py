"""The packaged all-MiniLM-L6-v2 as the embeddings API's encoder: `vectors` of token ids equal
the router's `embed` of the same texts, whatever the batch and its padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from largeforge.adapters.embeddings.transformers import (
    TransformersEmbeddingModel,
    _pooling_mode,
    packaged_minilm,
)
from largeforge.application.embeddings import EmbeddingEncoder
from largeforge.domain.errors import ModelNotFoundError

TEXTS = [
    "How do I reverse a list in Python?",
    "hi",
    "The integral of x squared is x cubed over three, plus a constant.",
    "Preheat the oven to 200 degrees and roast the vegetables for forty minutes.",
]


@pytest.fixture(scope="module")
def minilm() -> TransformersEmbeddingModel:
    return TransformersEmbeddingModel(threads=None)


def test_it_is_an_embedding_encoder_with_minilms_shape(minilm: TransformersEmbeddingModel) -> None:
    assert isinstance(minilm, EmbeddingEncoder)
    assert minilm.dimensions == 384
    assert minilm.max_input_tokens == 256  # sentence_bert_config.json's max_seq_length
    assert minilm.vocab_size == 30522
    ids = minilm.tokenize("hi")
    assert (ids[0], ids[-1]) == (101, 102)  # [CLS] ... [SEP]


def test_vectors_equal_embed_in_any_batch_and_order(minilm: TransformersEmbeddingModel) -> None:
    reference = minilm.embed(TEXTS).vectors.tolist()
    ids = [minilm.tokenize(t) for t in TEXTS]
    batched = minilm.vectors(ids)  # one padded batch, sorted by length inside
    alone = [minilm.vectors([i])[0] for i in ids]  # no padding at all
    for want, got, single in zip(reference, batched, alone, strict=True):
        assert len(got) == 384
        assert sum(a * b for a, b in zip(want, got, strict=True)) > 0.99999
        assert max(abs(a - b) for a, b in zip(want, got, strict=True)) < 1e-5
        assert max(abs(a - b) for a, b in zip(single, got, strict=True)) < 1e-5


def test_pooling_follows_the_sentence_transformers_config(tmp_path: Path) -> None:
    assert _pooling_mode(packaged_minilm()) == "mean"
    assert _pooling_mode(tmp_path) == "mean"  # a plain transformers directory
    pooling = tmp_path / "1_Pooling"
    pooling.mkdir()
    config = pooling / "config.json"
    config.write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    assert _pooling_mode(tmp_path) == "cls"
    config.write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ModelNotFoundError, match="max_tokens"):
        _pooling_mode(tmp_path)
