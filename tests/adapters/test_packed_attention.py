"""Per-sample attention for padding-free packed rows: same numbers as each sample alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.adapters.hf import packed_attention

torch = pytest.importorskip("torch")

SAMPLES = ([5, 6, 7, 8, 9], [11, 12, 13], [21, 22, 23, 24])


def load(model_dir: Path, attention: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention)


def packed_batch(with_boundaries: bool = True) -> dict[str, Any]:
    """One row holding every sample, as TRL's padding-free collator builds it."""
    lengths = [len(s) for s in SAMPLES]
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([[t for s in SAMPLES for t in s]]),
        "position_ids": torch.tensor([[p for n in lengths for p in range(n)]]),
        "use_cache": False,
    }
    if with_boundaries:
        cuts = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        batch |= {"cu_seq_lens_q": cuts, "cu_seq_lens_k": cuts}
        batch |= {"max_length_q": max(lengths), "max_length_k": max(lengths)}
    return batch


@pytest.fixture(scope="module")
def packed_model(tiny_model_dir: Path) -> Any:
    return load(tiny_model_dir, packed_attention.register())


def test_each_packed_sample_matches_the_sample_alone(packed_model: Any) -> None:
    with torch.no_grad():
        together = packed_model(**packed_batch()).logits[0]
        start = 0
        for sample in SAMPLES:
            alone = packed_model(input_ids=torch.tensor([sample])).logits[0]
            assert torch.allclose(together[start : start + len(sample)], alone, atol=1e-5)
            start += len(sample)


def test_gradients_equal_the_block_diagonal_sdpa_path(
    packed_model: Any, tiny_model_dir: Path
) -> None:
    """Training through it gives the gradients of transformers' own (masked, quadratic) path."""
    reference = load(tiny_model_dir, "sdpa")
    grads = []
    for model, batch in ((packed_model, packed_batch()), (reference, packed_batch(False))):
        model.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_a_padded_row_at_the_end_is_ignored(packed_model: Any) -> None:
    """A collator padding the row to a multiple leaves a tail outside every sample."""
    batch = packed_batch()
    batch["input_ids"] = torch.cat([batch["input_ids"], torch.tensor([[0, 0]])], dim=1)
    batch["position_ids"] = torch.cat([batch["position_ids"], torch.tensor([[0, 1]])], dim=1)
    with torch.no_grad():
        padded = packed_model(**batch).logits[0, :-2]
        plain = packed_model(**packed_batch()).logits[0]
    assert torch.allclose(padded, plain, atol=1e-5)


def test_padded_batches_and_generation_use_stock_sdpa(
    packed_model: Any, tiny_model_dir: Path
) -> None:
    reference = load(tiny_model_dir, "sdpa")
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        ours = packed_model(input_ids=ids, attention_mask=mask).logits
        theirs = reference(input_ids=ids, attention_mask=mask).logits
        generated = packed_model.generate(ids[1:], max_new_tokens=5, do_sample=False)
        expected = reference.generate(ids[1:], max_new_tokens=5, do_sample=False)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert generated.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("packing", "flags", "expected"),
    [
        (True, (), packed_attention.PACKED_ATTENTION),
        (False, (), "sdpa"),  # an fp32 CPU trains unpacked rows with the stock attention
        (False, ("avx512_bf16",), packed_attention.PACKED_ATTENTION),  # fp32 attention backward
    ],
)
def test_trainers_load_it_for_packed_runs_and_bf16_cpus(
    tiny_model_dir: Path, packing: bool, flags: tuple[str, ...], expected: str
) -> None:
    from largeforge.adapters.system.device import detect_device
    from largeforge.adapters.trl.stack import load_model_and_tokenizer
    from tests.adapters.test_trl_training import tiny_plan

    model, _ = load_model_and_tokenizer(
        str(tiny_model_dir), detect_device("cpu", flags=flags), tiny_plan(packing=packing)
    )
    assert model.config._attn_implementation == expected


def backward_elements(samples: int, length: int = 96) -> int:
    """Elements the backward pass of one packed row of `samples` equal samples writes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Written(TorchDispatchMode):  # type: ignore[misc]
        elements = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor):
                    Written.elements += tensor.numel()
            return out

    module = torch.nn.Module()  # training, causal: what a decoder's attention looks like
    q, k, v = (torch.randn(1, 2, length, 8, requires_grad=True) for _ in range(3))
    cuts = torch.arange(0, length + 1, length // samples, dtype=torch.int32)
    output, _ = packed_attention.packed_sdpa_attention(module, q, k, v, None, cu_seq_lens_q=cuts)
    with Written():
        output.sum().backward()
    return Written.elements


def test_the_backward_is_linear_in_the_row_not_in_the_samples_per_row() -> None:
    """A slice per sample would write a whole-row gradient per sample and tensor: quadratic in
    the samples per row, what made packed steps slower than unpacked ones on a CPU."""
    assert backward_elements(32) < 2 * backward_elements(2)


def test_samples_of_very_different_lengths_match_each_sample_alone(packed_model: Any) -> None:
    """One long sample and many short ones: several length groups, each padded to its longest."""
    samples = [list(range(5, 45)), *([[7, 8, 9]] * 6), [11, 12], list(range(50, 60))]
    lengths = [len(s) for s in samples]
    groups = packed_attention.length_groups(lengths)
    assert len(groups) > 1
    cuts = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = {
        "input_ids": torch.tensor([[t for s in samples for t in s]]),
        "position_ids": torch.tensor([[p for n in lengths for p in range(n)]]),
        "cu_seq_lens_q": cuts,
        "cu_seq_lens_k": cuts,
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
        "use_cache": False,
    }
    with torch.no_grad():
        together = packed_model(**batch).logits[0]
        start = 0
        for sample in samples:
            alone = packed_model(input_ids=torch.tensor([sample])).logits[0]
            assert torch.allclose(together[start : start + len(sample)], alone, atol=1e-5)
            start += len(sample)


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=60))
def test_length_groups_cover_every_sample_once_within_the_padding_bound(sizes: list[int]) -> None:
    groups = packed_attention.length_groups(sizes)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for group in groups:
        longest = sizes[group[0]]
        assert all(sizes[i] <= longest for i in group)
        # a group of more than one sample pads at most half again its real tokens
        assert len(group) == 1 or len(group) * longest <= 1.5 * sum(sizes[i] for i in group)


def test_bf16_training_on_a_cpu_attends_in_fp32_and_matches_fp32() -> None:
    """The bf16 backward runs through fp32 attention: same gradients as fp32 throughout, to
    bf16's resolution; without autograd (evaluation, generation) it stays in bf16."""
    module = torch.nn.Module()
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 16, 8) for _ in range(3))
    seen: list[Any] = []
    stock = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[0].dtype)
        return stock(*args, **kwargs)

    grads = []
    for dtype in (torch.bfloat16, torch.float32):
        leaves = [x.to(dtype).requires_grad_() for x in (q, k, v)]
        with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", spy):
            out, _ = packed_attention.packed_sdpa_attention(module, *leaves, None)
        assert out.dtype == dtype
        out.float().pow(2).sum().backward()
        grads.append(leaves[0].grad.float())
    assert seen == [torch.float32, torch.float32]
    assert torch.allclose(grads[0], grads[1], atol=0.05, rtol=0.02)
    with (
        torch.no_grad(),
        mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", spy),
    ):
        half = (x.bfloat16() for x in (q, k, v))
        packed_attention.packed_sdpa_attention(module, *half, None)
    assert seen[-1] == torch.bfloat16
