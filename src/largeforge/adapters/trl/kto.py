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
from largeforge.adapters.trl import recipe, stack
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.application.ports import MetricsCallback
from largeforge.domain.datasets import LabeledCompletion
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingResult, TrainingUnit


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


class TrlKtoTrainer:
    """`ModelTrainer` for `TrainingMethod.KTO` over TRL (options from the plan's `kto` group)."""

    def __init__(self, device: str = "auto") -> None:
        self._device = device

    def check_plan(self, plan: TrainingPlan) -> None:
        """Nothing beyond the plan's own checks."""

    @stack.stop_wins
    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[TrainingUnit],
        evaluation: Sequence[TrainingUnit],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult:
        device, model, tokenizer = stack.setup(self._device, model_dir, plan)
        from datasets import Dataset  # after setup: it names a missing stack with the fix
        from trl import KTOConfig, KTOTrainer

        train_ds = Dataset.from_list([to_unpaired_row(u) for u in labeled(train)])
        eval_ds = Dataset.from_list([to_unpaired_row(u) for u in labeled(evaluation)])
        args = KTOConfig(**kto_arguments(plan, device, Path(run_dir) / "checkpoints"))
        trainer = recipe.trainer_class(KTOTrainer)(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=stack.peft_config(plan),
        )
        return recipe.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)
