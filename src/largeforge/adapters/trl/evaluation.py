"""Evaluation before and after training, checked for NaN."""

from __future__ import annotations

import math
from typing import Any

import structlog

from largeforge.domain.errors import TrainingError

log = structlog.get_logger(__name__)


def evaluate(trainer: Any, has_eval: bool, step: int) -> dict[str, float]:
    """The eval metrics (the forwarder records them in metrics.jsonl), checked for NaN."""
    if not has_eval:
        return {}
    metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)}
    loss = metrics.get("eval_loss")
    if loss is not None and not math.isfinite(loss):
        raise TrainingError(f"evaluation loss is {loss} at step {step}")
    log.info(
        "evaluated",
        step=step,
        **{k: round(v, 4) for k, v in metrics.items() if "loss" in k or "reward" in k},
    )
    return metrics
