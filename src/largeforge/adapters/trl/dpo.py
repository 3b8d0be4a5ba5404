"""Direct preference optimisation with TRL's `DPOTrainer`.

With LoRA the reference model is the base model with the adapter disabled (no second copy in
memory); with full fine-tuning TRL keeps a frozen copy as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import compact_head, recipe, stack
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.application.ports import MetricsCallback
from largeforge.domain.datasets import PreferencePair
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingResult, TrainingUnit


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


class TrlDpoTrainer:
    """`ModelTrainer` for `TrainingMethod.DPO` over TRL (options from the plan's `dpo` group)."""

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
        from trl import DPOConfig, DPOTrainer

        train_ds = Dataset.from_list([to_preference_row(p) for p in pairs(train)])
        eval_ds = Dataset.from_list([to_preference_row(p) for p in pairs(evaluation)])
        args = DPOConfig(**dpo_arguments(plan, device, Path(run_dir) / "checkpoints"))
        trainer = recipe.trainer_class(DPOTrainer)(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=stack.peft_config(plan),
        )
        compact_head.install(trainer.model, dpo_head_outputs(trainer))
        return recipe.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)
