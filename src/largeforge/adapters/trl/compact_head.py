"""The output layer of a training step, projected only where a token is trained.

TRL's trainers call `model(..., labels=labels, fused_lm_head=True)` for per-token log-probs
without the `(batch, seq, vocab)` logits. On a device without Triton, TRL projects *every*
position through the 49k-row output layer and folds each tile with a dozen element-wise passes
(it keeps tile shapes fixed for compiling backends). On a CPU that is the dearest part of a
small model's step, and prompt and padding positions are thrown away afterwards.

`install` wraps that forward so that on such a device only the positions whose label is not
-100 are projected, in token chunks, with one matmul each over the whole vocabulary; each
chunk's log-probabilities are kept for the backward while a memory budget allows (else it is
recomputed). Same outputs, same `FusedCausalLMOutput`; measured by
`benchmarks/train_overhead.py`. Where the model scales or soft-caps its logits, asks for router
logits, or the device has Triton, TRL's own head is left in place.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import structlog

log = structlog.get_logger(__name__)

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
# Logit transforms TRL's head applies; a model that sets any of them keeps TRL's head.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
# fp32 logits per token chunk: 16 MiB, under glibc's largest mmap threshold (32 MiB), so chunk
# buffers are reused from the heap instead of mapped, page-faulted and unmapped each time.
CHUNK_ELEMENTS = 1 << 22
SAVE_BUDGET_BYTES = 1 << 30  # log-probs kept for the backward, per call


def _chunk_rows(vocab: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab, 1))


def compact_log_probs(
    hidden: Any,
    weight: Any,
    bias: Any,
    targets: Any,
    outputs: tuple[str, ...] = OUTPUTS,
    save_budget: int | None = None,
) -> tuple[Any, ...]:
    """Per-row `(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1)` of
    `hidden @ weight.T + bias` at `targets` (fields not in `outputs` are None). Differentiable
    in `log_probs` and `entropy`; the rest are metrics."""
    budget = SAVE_BUDGET_BYTES if save_budget is None else save_budget
    return _function().apply(hidden, weight, bias, targets, outputs, budget)  # type: ignore[no-any-return]


def _compute_dtype(hidden: Any) -> Any:
    import torch

    kind = hidden.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype


def _logits(h: Any, weight: Any, bias: Any) -> Any:
    """fp32 logits of one chunk, the matmul in the chunk's (compute) dtype."""
    import torch

    z = torch.mm(h, weight.t())
    if bias is not None:
        z = z + bias
    return z.float()


@functools.cache
def _function() -> Any:
    """The autograd function, built on first use (torch is imported lazily)."""
    import torch

    class CompactLogProbs(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(
            ctx: Any,
            hidden: Any,
            weight: Any,
            bias: Any,
            targets: Any,
            outputs: tuple[str, ...],
            budget: int,
        ) -> tuple[Any, ...]:
            ctx.set_materialize_grads(False)
            dtype = _compute_dtype(hidden)
            rows, vocab = hidden.shape[0], weight.shape[0]
            with torch.autocast(hidden.device.type, enabled=False):
                w = weight.to(dtype)
                b = None if bias is None else bias.to(dtype)
                fields: dict[str, list[Any]] = {name: [] for name in ("lse", *OUTPUTS)}
                saved: list[Any] = []
                kept = 0
                step = _chunk_rows(vocab)
                for start in range(0, rows, step):
                    z = _logits(hidden[start : start + step].to(dtype), w, b)
                    t = targets[start : start + step].unsqueeze(-1)
                    lse = torch.logsumexp(z, -1)
                    log_p = z.sub_(lse.unsqueeze(-1))  # z is spent: log-probs in place
                    fields["lse"].append(lse)
                    fields["log_probs"].append(log_p.gather(-1, t).squeeze(-1))
                    if "entropy" in outputs:
                        fields["entropy"].append(-log_p.exp().mul_(log_p).sum(-1))
                    if "log_sum_sq_probs" in outputs:
                        fields["log_sum_sq_probs"].append(torch.logsumexp(2 * log_p, -1))
                    if "mean_logits" in outputs:
                        fields["mean_logits"].append(log_p.mean(-1) + lse)
                    if "is_top1" in outputs:  # argmax takes the first maximum, as TRL does
                        fields["is_top1"].append(log_p.argmax(-1) == t.squeeze(-1))
                    size = log_p.numel() * dtype.itemsize
                    if kept + size <= budget:  # else the backward recomputes this chunk
                        saved.append(log_p.to(dtype))
                        kept += size
                    else:
                        saved.append(None)
            result = {k: torch.cat(v) if v else None for k, v in fields.items()}
            ctx.saved_chunks = saved
            ctx.step, ctx.dtype = step, dtype
            entropy = result["entropy"]
            ctx.save_for_backward(
                hidden, weight, bias, targets, entropy if entropy is not None else result["lse"]
            )
            ctx.has_entropy = entropy is not None
            metrics = [result[k] for k in ("log_sum_sq_probs", "mean_logits", "is_top1")]
            ctx.mark_non_differentiable(*(m for m in metrics if m is not None))
            return (result["log_probs"], entropy, *metrics)

        @staticmethod
        def backward(ctx: Any, grad_log_p: Any, grad_entropy: Any, *_: Any) -> tuple[Any, ...]:
            hidden, weight, bias, targets, entropy = ctx.saved_tensors
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            dtype, step = ctx.dtype, ctx.step
            grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
            with torch.autocast(hidden.device.type, enabled=False):
                w = weight.to(dtype)
                b = None if bias is None else bias.to(dtype)
                for i, start in enumerate(range(0, hidden.shape[0], step)):
                    stop = start + step
                    h = hidden[start:stop].to(dtype)
                    log_p = ctx.saved_chunks[i]
                    if log_p is None:  # over the budget: recompute this chunk
                        z = _logits(h, w, b)
                        log_p = z.sub_(torch.logsumexp(z, -1, keepdim=True))
                    log_p = log_p.float()
                    p = log_p.exp()
                    if grad_entropy is not None and ctx.has_entropy:
                        # d H / dz_j = -p_j (log p_j + H)
                        ge = grad_entropy[start:stop].float().unsqueeze(-1)
                        term = (log_p + entropy[start:stop].unsqueeze(-1)).mul_(p).mul_(ge)
                    else:
                        term = None
                    # d log p_t / dz_j = 1[j = t] - p_j; p is spent
                    g = (
                        grad_log_p[start:stop].float().unsqueeze(-1)
                        if grad_log_p is not None
                        else p.new_zeros(p.shape[0], 1)
                    )
                    grad_z = p.mul_(g.neg()).scatter_add_(-1, targets[start:stop].unsqueeze(-1), g)
                    if term is not None:
                        grad_z.sub_(term)
                    gz = grad_z.to(dtype)
                    if grad_h is not None:
                        grad_h[start:stop] += torch.mm(gz, w).float()
                    if grad_w is not None:
                        grad_w += torch.mm(gz.t(), h).float()
                    if grad_b is not None:
                        grad_b += grad_z.sum(0)
            ctx.saved_chunks = None

            def back(grad: Any, like: Any) -> Any:
                return None if grad is None else grad.to(like.dtype)

            return back(grad_h, hidden), back(grad_w, weight), back(grad_b, bias), None, None, None

    return CompactLogProbs


def supported(model: Any) -> str | None:
    """Why `model` keeps TRL's head (None: the compact head serves it)."""
    config = model.config.get_text_config()
    for name in _LOGIT_TRANSFORMS:
        if getattr(config, name, None) not in (None, 1.0):
            return f"the model's config sets {name}"
    if getattr(config, "output_router_logits", False):
        return "the model returns router logits"
    return None


def _uses_triton(device: Any) -> bool:
    from trl.kernels.chunked_logprob import _use_triton

    return bool(_use_triton(device))


def install(model: Any, outputs: tuple[str, ...] = OUTPUTS) -> bool:
    """Wrap the fused forward TRL put on `model` (a PEFT model or the model itself) so that
    `fused_lm_head=True` projects only trained positions where the device has no Triton.
    Returns whether it was installed (logged either way)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    reason = supported(base)
    if reason is None and _uses_triton(base.get_output_embeddings().weight.device):
        reason = "the device runs TRL's Triton kernel, which already skips untrained positions"
    if reason is not None:
        log.info("compact_head", installed=False, reason=reason)
        return False
    trl_forward = base.forward  # TRL's: passes calls without fused_lm_head to the model's own

    @functools.wraps(trl_forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head:
            return trl_forward(
                *args,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        return _compact_forward(
            self, args, kwargs, labels, shift_labels, num_items_in_batch, outputs
        )

    base.forward = types.MethodType(forward, base)
    log.info("compact_head", installed=True, outputs=list(outputs))
    return True


def _compact_forward(
    model: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    labels: Any,
    shift_labels: Any,
    num_items_in_batch: Any,
    outputs: tuple[str, ...],
) -> Any:
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    backbone = model.base_model(*args, **kwargs)
    if shift_labels is None:
        hidden, labels = backbone.last_hidden_state[:, :-1], labels[:, 1:]
    else:
        hidden, labels = backbone.last_hidden_state, shift_labels
    head = model.get_output_embeddings()
    labels = labels.to(head.weight.device)
    mask = labels != -100
    fields = compact_log_probs(
        hidden.to(head.weight.device)[mask], head.weight, head.bias, labels[mask], outputs
    )
    # masked_scatter keeps an all-masked batch connected to the graph (a zero loss, not an error)
    log_probs, entropy, sq, mean, top1 = (
        None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in fields
    )
    assert log_probs is not None  # always computed
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(
        loss=-log_probs.sum() / count,
        log_probs=log_probs,
        entropy=entropy,
        log_sum_sq_probs=sq,
        mean_logits=mean,
        is_top1=top1,
        label_mask=mask,
    )
