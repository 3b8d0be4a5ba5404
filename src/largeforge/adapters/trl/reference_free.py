"""The preference methods without a reference model, over TRL's experimental trainers:
ORPO (`ORPOTrainer`) and SimPO (`CPOTrainer` with the SimPO loss). Both train on the same
prompt/chosen/rejected rows as DPO."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import recipe, stack
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.dpo import pairs, to_preference_row
from largeforge.application.ports import MetricsCallback
from largeforge.domain.training import TrainingMethod, TrainingPlan, TrainingResult, TrainingUnit


def orpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`ORPOConfig` fields: the common ones and the plan's `orpo` option group."""
    return {**common_arguments(plan, device, work_dir), "beta": plan.orpo.beta}


def simpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`CPOConfig` fields for SimPO: TRL's `simpo_gamma` is the paper's target margin gamma,
    `gamma_beta_ratio * beta`; `cpo_alpha` weighs the chosen answer's SFT loss."""
    options = plan.simpo
    return {
        **common_arguments(plan, device, work_dir),
        "loss_type": "simpo",
        "beta": options.beta,
        "simpo_gamma": options.gamma_beta_ratio * options.beta,
        "cpo_alpha": options.sft_weight,
    }


class TrlReferenceFreeTrainer:
    """`ModelTrainer` for `TrainingMethod.ORPO` and `TrainingMethod.SIMPO` over TRL."""

    def __init__(self, method: TrainingMethod, device: str = "auto") -> None:
        if method not in (TrainingMethod.ORPO, TrainingMethod.SIMPO):
            raise ValueError(f"{method} is not a reference-free preference method")
        self._method = method
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

        # TRL warns on every import from `trl.experimental`; the docs say these two are.
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        work_dir = Path(run_dir) / "checkpoints"
        if self._method is TrainingMethod.ORPO:
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            base: type = ORPOTrainer
            args: Any = ORPOConfig(**orpo_arguments(plan, device, work_dir))
        else:
            from trl.experimental.cpo import CPOConfig, CPOTrainer

            base = CPOTrainer
            args = CPOConfig(**simpo_arguments(plan, device, work_dir))
        train_ds = Dataset.from_list([to_preference_row(p) for p in pairs(train)])
        eval_ds = Dataset.from_list([to_preference_row(p) for p in pairs(evaluation)])
        trainer = recipe.trainer_class(base)(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=stack.peft_config(plan),
        )
        return recipe.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)
