"""The packaged all-MiniLM-L6-v2 as the embeddings API's encoder: `vectors` of token ids equal
the router's `embed` of the same texts, whatever the batch and its padding; `dtype="auto"` is bf16
(prepacked, lean BERT forward) on a CPU with bf16 instructions, fp32 elsewhere, and bf16 vectors
keep a cosine of at least 0.999 to fp32 ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from largeforge.adapters.embeddings.transformers import (
    TransformersEmbeddingModel,
    _pooling_mode,
    embedding_dtype,
    packaged_minilm,
)
from largeforge.adapters.hf.fast_linear import PrepackedLinear, can_prepack
from largeforge.adapters.system.device import detect_device
from largeforge.application.embeddings import EmbeddingEncoder
from largeforge.domain.errors import ModelNotFoundError

TEXTS = [
    "How do I reverse a list in Python?",
    "hi",
    "The integral of x squared is x cubed over three, plus a constant.",
    "Preheat the oven to 200 degrees and roast the vegetables for forty minutes.",
]
MORE = [
    "Write a SQL query that joins orders to customers and sums the totals per month",
    "why is the sky blue",
    "Translate 'good morning, how are you?' into French, please.",
    "def f(x): return x ** 2  # what does this do?",
]
NO_BF16 = ["sse4_2", "avx2", "avx512f"]
BF16 = ["avx512f", "avx512_bf16", "amx_bf16"]
needs_prepacked = pytest.mark.skipif(
    not can_prepack(), reason="this torch has no oneDNN prepacked bf16 linear"
)


@pytest.fixture(scope="module")
def minilm() -> TransformersEmbeddingModel:
    """fp32: `auto` on a CPU without bf16 instructions."""
    return TransformersEmbeddingModel(threads=None, device=detect_device("cpu", flags=NO_BF16))


@pytest.fixture(scope="module")
def minilm_bf16() -> TransformersEmbeddingModel:
    """bf16: `auto` on a CPU with bf16 instructions."""
    if not can_prepack():
        pytest.skip("this torch has no oneDNN prepacked bf16 linear")
    return TransformersEmbeddingModel(threads=None, device=detect_device("cpu", flags=BF16))


def cosines(a: list[list[float]], b: list[list[float]]) -> list[float]:
    return [sum(x * y for x, y in zip(u, v, strict=True)) for u, v in zip(a, b, strict=True)]


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


def test_auto_dtype_is_bf16_only_on_a_cpu_with_bf16_instructions() -> None:
    bf16_cpu = detect_device("cpu", flags=BF16)
    no_bf16_cpu = detect_device("cpu", flags=NO_BF16)
    dtype, reason = embedding_dtype("auto", no_bf16_cpu)
    assert (dtype, reason) == ("float32", "auto: " + no_bf16_cpu.dtype_reason)
    assert "no bf16 instructions" in reason
    assert embedding_dtype("auto", detect_device("cpu", flags=["avx512_bf16"]))[0] == (
        "bfloat16" if can_prepack() else "float32"
    )
    assert embedding_dtype("fp32", bf16_cpu)[0] == "float32"  # fp32 stays available
    assert embedding_dtype("bfloat16", no_bf16_cpu)[0] == "bfloat16"  # as asked
    with pytest.raises(ValueError, match="float16"):
        embedding_dtype("float16", bf16_cpu)


@needs_prepacked
def test_the_models_dtype_follows_the_cpu(
    minilm: TransformersEmbeddingModel, minilm_bf16: TransformersEmbeddingModel
) -> None:
    assert minilm.dtype == "float32"
    assert minilm_bf16.dtype == "bfloat16"
    assert minilm_bf16.dimensions == 384
    assert minilm_bf16.max_input_tokens == 256


@needs_prepacked
def test_bf16_vectors_keep_a_cosine_of_0999_to_fp32(
    minilm: TransformersEmbeddingModel, minilm_bf16: TransformersEmbeddingModel
) -> None:
    texts = TEXTS + MORE
    want = minilm.embed(texts).vectors.tolist()
    batched = minilm_bf16.embed(texts).vectors.tolist()  # one padded batch
    alone = [minilm_bf16.embed([t]).vectors.tolist()[0] for t in texts]
    ids = minilm_bf16.vectors([minilm_bf16.tokenize(t) for t in texts])
    for got in (batched, alone, ids):
        assert min(cosines(want, got)) >= 0.999
    assert min(cosines(alone, batched)) >= 0.9999  # padding barely matters
    assert max(abs(a - b) for a, b in zip(want[0], batched[0], strict=True)) > 1e-6  # real bf16


@needs_prepacked
def test_bf16_on_other_encoders_prepacks_the_transformers_linears(tiny_model_dir: Path) -> None:
    fp32 = TransformersEmbeddingModel(tiny_model_dir, dtype="float32")
    bf16 = TransformersEmbeddingModel(tiny_model_dir, dtype="bfloat16")  # a Llama: not BERT
    assert isinstance(bf16._model.layers[0].mlp.up_proj, PrepackedLinear)
    want, got = fp32.embed(TEXTS).vectors.tolist(), bf16.embed(TEXTS).vectors.tolist()
    assert min(cosines(want, got)) >= 0.999
