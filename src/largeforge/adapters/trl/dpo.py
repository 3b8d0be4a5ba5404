"""Direct preference optimisation with TRL's `DPOTrainer`.

With LoRA the reference model is the base model with the adapter disabled (no second copy in
memory); with full fine-tuning TRL keeps a frozen copy as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from largeforge.adapters.trl import common
from largeforge.application.ports import MetricsCallback
from largeforge.domain.datasets import PreferencePair
from largeforge.domain.training import TrainingPlan, TrainingResult


def to_preference_row(pair: PreferencePair) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational preference row."""
    return {
        "prompt": [m.as_dict() for m in pair.prompt],
        "chosen": [m.as_dict() for m in pair.chosen],
        "rejected": [m.as_dict() for m in pair.rejected],
    }


class TrlDpoTrainer:
    """`PreferenceTrainer` over TRL DPO (sigmoid loss, `beta` from the plan)."""

    def __init__(self, device: str = "auto") -> None:
        self._device = device

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[PreferencePair],
        evaluation: Sequence[PreferencePair],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult:
        device, model, tokenizer = common.setup(self._device, model_dir, plan)
        from datasets import Dataset  # after setup: it names a missing stack with the fix
        from trl import DPOConfig, DPOTrainer

        train_ds = Dataset.from_list([to_preference_row(p) for p in train])
        eval_ds = Dataset.from_list([to_preference_row(p) for p in evaluation])
        args = DPOConfig(
            **common.common_arguments(plan, device, Path(run_dir) / "checkpoints"),
            beta=plan.dpo_beta,
            precompute_ref_log_probs=plan.dpo_precompute_ref_log_probs,
        )
        trainer = common.with_atomic_checkpoints(DPOTrainer)(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=common.peft_config(plan),
        )
        return common.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)
