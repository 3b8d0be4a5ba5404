"""The serving attention: stock sdpa's numbers on padded batches, without repeating K/V."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from largeforge.adapters.hf import serving_attention

torch = pytest.importorskip("torch")


def padded_batch() -> dict[str, Any]:
    """Two prompts of different lengths, left-padded as the engine pads them."""
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [11, 12, 13, 14, 15, 16]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def test_padded_prefill_and_decode_equal_stock_sdpa_without_repeat_kv(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, DynamicCache
    from transformers.integrations import sdpa_attention

    results = []
    for attention in ("sdpa", serving_attention.register()):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
        assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped
        batch = padded_batch()
        with (
            torch.no_grad(),
            mock.patch.object(
                sdpa_attention, "repeat_kv", wraps=sdpa_attention.repeat_kv
            ) as repeats,
        ):
            prefill = model(**batch, past_key_values=DynamicCache(), use_cache=True)
            step = model(
                input_ids=torch.tensor([[8], [17]]),
                attention_mask=torch.cat([batch["attention_mask"], torch.ones(2, 1)], 1).long(),
                position_ids=torch.tensor([[3], [6]]),
                past_key_values=prefill.past_key_values,
                use_cache=True,
            )
        results.append((prefill.logits[:, 3:], step.logits, repeats.call_count))
    (stock_prefill, stock_step, stock_repeats), (prefill, step, repeats) = results
    assert stock_repeats > 0  # what transformers does with a mask
    assert repeats == 0
    assert torch.allclose(prefill, stock_prefill, atol=1e-5)
    assert torch.allclose(step, stock_step, atol=1e-5)


def test_the_engine_loads_its_model_with_it_on_a_cpu(tiny_model_dir: Path) -> None:
    from largeforge.adapters.hf.inference import _load

    model, _, _ = _load(str(tiny_model_dir), "float32", "cpu", {}, 4)
    assert model.config._attn_implementation == serving_attention.SERVING_ATTENTION


@pytest.mark.parametrize("rows", [1, 2], ids=["one row, no mask", "padded rows"])
def test_a_decode_step_folds_each_query_group_into_one_kv_head(
    tiny_model_dir: Path, rows: int
) -> None:
    """One query position: the query heads sharing a K/V head run as that head's query rows,
    with the numbers of stock sdpa."""
    from transformers import AutoModelForCausalLM, DynamicCache

    stock = torch.nn.functional.scaled_dot_product_attention
    shapes: list[tuple[int, ...]] = []

    def spy(query: Any, *args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(query.shape))
        return stock(query, *args, **kwargs)

    logits = []
    for attention in ("sdpa", serving_attention.register()):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention)
        batch = {k: v[-rows:] for k, v in padded_batch().items()}
        with torch.no_grad():
            prefill = model(**batch, past_key_values=DynamicCache(), use_cache=True)
            shapes.clear()
            with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", spy):
                step = model(
                    input_ids=torch.tensor([[8], [17]])[-rows:],
                    attention_mask=torch.cat(
                        [batch["attention_mask"], torch.ones(rows, 1).long()], 1
                    ),
                    position_ids=torch.tensor([[3], [6]])[-rows:],
                    past_key_values=prefill.past_key_values,
                    use_cache=True,
                )
        logits.append(step.logits)
    config = model.config
    groups = config.num_attention_heads // config.num_key_value_heads
    assert shapes
    assert all(s[1:3] == (config.num_key_value_heads, groups) for s in shapes)
    assert torch.allclose(logits[1], logits[0], atol=1e-5)
