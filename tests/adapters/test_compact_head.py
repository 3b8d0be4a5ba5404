"""The compact output layer: TRL's fused-head numbers and gradients, from trained positions only."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from largeforge.adapters.trl import compact_head

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")

ALL = compact_head.OUTPUTS


def trl_reference(hidden: Any, weight: Any, bias: Any, targets: Any) -> tuple[Any, ...]:
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    return ChunkedLogProbFunction.apply(  # type: ignore[no-any-return]
        hidden, weight, bias, targets, 1.0, 64, None, 1.0, ALL
    )


def leaves(rows: int = 37, width: int = 16, vocab: int = 300) -> tuple[Any, ...]:
    torch.manual_seed(0)
    return (
        torch.randn(rows, width, requires_grad=True),
        (torch.randn(vocab, width) * 0.5).requires_grad_(),
        (torch.randn(vocab) * 0.1).requires_grad_(),
        torch.randint(0, vocab, (rows,)),
    )


@pytest.mark.parametrize("save_budget", [None, 0], ids=["kept", "recomputed"])
def test_every_output_and_gradient_equals_trls_head(save_budget: int | None) -> None:
    hidden, weight, bias, targets = leaves()
    ours = compact_head.compact_log_probs(hidden, weight, bias, targets, ALL, save_budget)
    copies = [x.detach().clone().requires_grad_() for x in (hidden, weight, bias)]
    theirs = trl_reference(*copies, targets)
    for name, a, b in zip(ALL, ours, theirs, strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    # the loss gradient and an entropy gradient (an entropy bonus), through both
    for outputs in (ours, theirs):
        (-outputs[0].sum() + 0.1 * outputs[1].sum()).backward()
    for mine, reference in zip((hidden, weight, bias), copies, strict=True):
        assert mine.grad.abs().sum() > 0
        assert torch.allclose(mine.grad, reference.grad, atol=1e-5)


def test_many_small_chunks_give_the_same_numbers() -> None:
    hidden, weight, bias, targets = leaves()
    whole = compact_head.compact_log_probs(hidden, weight, bias, targets, ALL)
    whole[0].sum().backward()
    expected = hidden.grad.clone()
    hidden.grad = None
    with mock.patch.object(compact_head, "CHUNK_ELEMENTS", 300 * 5):  # 16 rows a chunk
        chunked = compact_head.compact_log_probs(hidden, weight, bias, targets, ALL, 300 * 20)
    chunked[0].sum().backward()  # the first chunk kept, the others recomputed
    for a, b in zip(whole, chunked, strict=True):
        assert torch.equal(a, b)
    assert torch.allclose(hidden.grad, expected, atol=1e-6)


def test_fields_not_asked_for_are_none_and_metrics_carry_no_gradient() -> None:
    hidden, weight, _, targets = leaves()
    log_p, entropy, sq, mean, top1 = compact_head.compact_log_probs(
        hidden, weight, None, targets, ("log_probs", "is_top1")
    )
    assert (entropy, sq, mean) == (None, None, None)
    assert log_p.requires_grad
    assert not top1.requires_grad
    assert top1.dtype == torch.bool


def fused_outputs(model: Any, batch: dict[str, Any]) -> Any:
    return model(**batch, fused_lm_head=True)


def test_installed_forward_equals_trls_fused_forward(tiny_model_dir: Path) -> None:
    """Through the tiny model: prompt positions (-100) are skipped, the rest equal TRL's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=ALL)
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[2, :] = -100  # a row with nothing trained
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    theirs = fused_outputs(model, batch)
    theirs.loss.backward()
    expected = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    projected: list[int] = []
    original = compact_head.compact_log_probs

    def counted(hidden: Any, *args: Any, **kwargs: Any) -> Any:
        projected.append(hidden.shape[0])
        return original(hidden, *args, **kwargs)

    assert compact_head.install(model, ALL)
    with mock.patch.object(compact_head, "compact_log_probs", counted):
        ours = fused_outputs(model, batch)
    ours.loss.backward()
    assert projected == [14]  # rows 0 and 1, labels 5..11 each (row 2 trains nothing)
    for name in ("loss", *ALL, "label_mask"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name
    assert torch.allclose(model.model.embed_tokens.weight.grad, expected, atol=1e-6)
    plain = model(input_ids=ids).logits  # without fused_lm_head: the model's own forward
    assert plain.shape == (3, 12, model.config.vocab_size)


def test_models_that_transform_their_logits_keep_trls_head(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.final_logit_softcapping = 30.0
    trl_utils.add_fused_lm_head(model)
    before = model.forward
    assert compact_head.supported(model) == "the model's config sets final_logit_softcapping"
    assert not compact_head.install(model)
    assert model.forward is before


def test_sft_and_dpo_trainers_train_through_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Both trainers' steps and evaluations run the compact head, never TRL's CPU tiles."""
    from trl.kernels import chunked_logprob

    from largeforge.adapters.hf.chat_template import HfEncoderFactory
    from largeforge.adapters.trl.dpo import TrlDpoTrainer
    from largeforge.adapters.trl.sft import TrlSftTrainer
    from largeforge.domain import Message, Role
    from largeforge.domain.datasets import PreferencePair
    from tests.adapters.test_trl_training import tiny_plan
    from tests.conftest import make_example

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [encoder.encode(make_example(f"q{i}", f"answer {i}")) for i in range(10)]
    calls: list[int] = []
    original = compact_head.compact_log_probs

    def counted(hidden: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(hidden.shape[0])
        return original(hidden, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("TRL's CPU tile ran")

    with (
        mock.patch.object(compact_head, "compact_log_probs", counted),
        mock.patch.object(chunked_logprob, "_forward_tile", refuse),
    ):
        result = TrlSftTrainer(device="cpu").train(
            tiny_plan(max_steps=2),
            str(tiny_model_dir),
            examples[:8],
            examples[8:],
            str(tmp_path),
            lambda m: None,
        )
        assert result.steps == 2
        assert result.eval_loss_after is not None
        assert len(calls) >= 4  # evaluation before, two steps, evaluation after
        calls.clear()
        pairs = [
            PreferencePair(
                prompt=(Message(Role.USER, f"Is {i} even?"),),
                chosen=(Message(Role.ASSISTANT, "yes"),),
                rejected=(Message(Role.ASSISTANT, "banana"),),
            )
            for i in range(6)
        ]
        result = TrlDpoTrainer(device="cpu").train(
            tiny_plan(method="dpo", max_steps=2),
            str(tiny_model_dir),
            pairs[:4],
            pairs[4:],
            str(tmp_path / "dpo"),
            lambda m: None,
        )
    assert result.steps == 2
    assert result.eval_reward_margin_after is not None
    assert len(calls) >= 4
