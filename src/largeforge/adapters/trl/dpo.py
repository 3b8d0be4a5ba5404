"""Direct preference optimisation with TRL's `DPOTrainer`.

With LoRA the reference model is the base model with the adapter disabled (no second copy in
memory); with full fine-tuning TRL keeps a frozen copy as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import compact_head
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.method_trainer import TrlMethodTrainer
from largeforge.domain.datasets import PreferencePair
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingUnit


def to_preference_row(pair: PreferencePair) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational preference row."""
    return {
        "prompt": [m.as_dict() for m in pair.prompt],
        "chosen": [m.as_dict() for m in pair.chosen],
        "rejected": [m.as_dict() for m in pair.rejected],
    }


def pairs(units: Sequence[TrainingUnit]) -> list[PreferencePair]:
    """The units as preference pairs; a `TrainingError` if any is not one."""
    wrong = [u for u in units if not isinstance(u, PreferencePair)]
    if wrong:
        raise TrainingError(f"DPO trains on preference pairs, got {type(wrong[0]).__name__}")
    return [u for u in units if isinstance(u, PreferencePair)]


def dpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`DPOConfig` fields: the common ones and the plan's `dpo` option group."""
    return {
        **common_arguments(plan, device, work_dir),
        "beta": plan.dpo.beta,
        "loss_type": [plan.dpo.loss_type],
        "precompute_ref_log_probs": plan.dpo.precompute_ref_log_probs,
    }


def dpo_head_outputs(trainer: Any) -> tuple[str, ...]:
    """What TRL's DPO loss and metrics read from the fused head (WPO weighting adds one)."""
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    return (*outputs, "log_sum_sq_probs") if getattr(trainer, "use_weighting", False) else outputs


class TrlDpoTrainer(TrlMethodTrainer):
    """`ModelTrainer` for `TrainingMethod.DPO` over TRL (options from the plan's `dpo` group)."""

    def rows(self, units: Sequence[TrainingUnit], tokenizer: Any) -> list[dict[str, Any]]:
        return [to_preference_row(p) for p in pairs(units)]

    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path, tokenizer: Any
    ) -> tuple[type, Any, dict[str, Any]]:
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig(**dpo_arguments(plan, device, work_dir)), {"ref_model": None}

    def prepare(self, trainer: Any) -> None:
        compact_head.install(trainer.model, dpo_head_outputs(trainer))
