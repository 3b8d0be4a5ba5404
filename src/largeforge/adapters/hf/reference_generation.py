"""The reference for served answers: transformers' own greedy `generate` on the same weights.

Prompts are rendered exactly as the server renders them (the chat template with the generation
prompt, then tokenized without adding special tokens); the model loads on the device and in the
dtype the served side of the check uses (fp32 for fidelity), and stops where its
generation_config says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from largeforge.domain.datasets import Message
from largeforge.domain.errors import ConfigError
from largeforge.domain.fidelity import ProbeAnswer


class TransformersReferenceGenerator:
    """The `ReferenceGenerator` port: one greedy `model.generate` per probe (no batching, so
    no padding changes the numbers)."""

    def __init__(self, device: str = "auto", dtype: str = "auto") -> None:
        self._device = device
        self._dtype = dtype

    def answers(
        self, model_dir: str, probes: Sequence[Sequence[Message]], max_tokens: int
    ) -> list[ProbeAnswer]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from largeforge.adapters.system.device import detect_device, resolve_dtype

        hf_logging.set_verbosity_error()
        info = detect_device(self._device)
        dtype = getattr(torch, resolve_dtype(self._dtype, info))
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(info.kind)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{model_dir}: cannot load the model ({exc})") from None
        model.eval()
        eos = _ids(model.generation_config.eos_token_id)
        pad = model.generation_config.pad_token_id
        if pad is None:
            pad = eos[0] if eos else tokenizer.pad_token_id
        answers = []
        try:
            for messages in probes:
                answers.append(_answer(model, tokenizer, messages, max_tokens, eos, pad, info.kind))
        finally:
            del model
        return answers


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


def _answer(
    model: Any,
    tokenizer: Any,
    messages: Sequence[Message],
    max_tokens: int,
    eos: list[int],
    pad: int | None,
    device: str,
) -> ProbeAnswer:
    import torch

    text = tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(str(text), add_special_tokens=False, return_tensors="pt")
    prompt = {k: v.to(device) for k, v in prompt.items()}
    with torch.no_grad():
        out = model.generate(
            **prompt,
            do_sample=False,
            max_new_tokens=max_tokens,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
    generated = [int(t) for t in out.sequences[0, prompt["input_ids"].shape[1] :].tolist()]
    gaps = []
    for scores in out.scores[: len(generated)]:
        top = torch.topk(torch.log_softmax(scores[0].float(), dim=-1), 2).values.tolist()
        gaps.append(float(top[0] - top[1]))
    stopped = bool(generated) and generated[-1] in eos
    content = generated[:-1] if stopped else generated
    return ProbeAnswer(
        text=str(tokenizer.decode(content, skip_special_tokens=True)),
        completion_tokens=len(generated),
        stopped=stopped,
        tokens=tuple(str(tokenizer.decode([t])) for t in generated),
        top2_gaps=tuple(gaps),
    )
