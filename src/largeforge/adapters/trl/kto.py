"""Kahneman-Tversky optimisation with TRL's `KTOTrainer`, on completions labelled desirable or
not (preference pairs arrive here already split into one of each).

With LoRA the reference model is the base model with the adapter disabled; with full
fine-tuning TRL keeps a frozen copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.method_trainer import TrlMethodTrainer
from largeforge.domain.datasets import LabeledCompletion
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingUnit


def labeled(units: Sequence[TrainingUnit]) -> list[LabeledCompletion]:
    """The units as labelled completions; a `TrainingError` if any is not one."""
    wrong = [u for u in units if not isinstance(u, LabeledCompletion)]
    if wrong:
        raise TrainingError(f"KTO trains on labelled completions, got {type(wrong[0]).__name__}")
    return [u for u in units if isinstance(u, LabeledCompletion)]


def to_unpaired_row(unit: LabeledCompletion) -> dict[str, Any]:
    """TRL's conversational unpaired preference row."""
    return {
        "prompt": [m.as_dict() for m in unit.prompt],
        "completion": [m.as_dict() for m in unit.completion],
        "label": unit.label,
    }


def kto_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`KTOConfig` fields: the common ones and the plan's `kto` option group."""
    return {
        **common_arguments(plan, device, work_dir),
        "beta": plan.kto.beta,
        "loss_type": plan.kto.loss_type,
        "desirable_weight": plan.kto.desirable_weight,
        "undesirable_weight": plan.kto.undesirable_weight,
    }


class TrlKtoTrainer(TrlMethodTrainer):
    """`ModelTrainer` for `TrainingMethod.KTO` over TRL (options from the plan's `kto` group)."""

    def rows(self, units: Sequence[TrainingUnit], tokenizer: Any) -> list[dict[str, Any]]:
        return [to_unpaired_row(u) for u in labeled(units)]

    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path, tokenizer: Any
    ) -> tuple[type, Any, dict[str, Any]]:
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer, KTOConfig(**kto_arguments(plan, device, work_dir)), {"ref_model": None}
