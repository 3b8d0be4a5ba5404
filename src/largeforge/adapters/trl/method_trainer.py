"""The shape every TRL method adapter but SFT shares: the units as TRL's rows, the stack
loaded, one TRL trainer built with LargeForge's checkpoints and metrics, then `recipe.fit`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import recipe, stack
from largeforge.application.ports import MetricsCallback
from largeforge.domain.training import TrainingPlan, TrainingResult, TrainingUnit


class TrlMethodTrainer(ABC):
    """A `ModelTrainer` over one TRL trainer class. A subclass says how its units become TRL's
    rows and which trainer, config and extra constructor arguments it takes."""

    def __init__(self, device: str = "auto") -> None:
        self._device = device

    def check_plan(self, plan: TrainingPlan) -> None:
        """Nothing beyond the plan's own checks (a subclass may refuse more, before loading)."""
        return None

    @abstractmethod
    def rows(self, units: Sequence[TrainingUnit], tokenizer: Any) -> list[dict[str, Any]]:
        """TRL's dataset rows; a `TrainingError` for a unit the method does not train on."""

    @abstractmethod
    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path, tokenizer: Any
    ) -> tuple[type, Any, dict[str, Any]]:
        """(the TRL trainer class, its config, extra constructor keywords)."""

    def prepare(self, trainer: Any) -> None:
        """Adjust the built trainer before it fits (nothing by default)."""
        return None

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

        train_rows, eval_rows = self.rows(train, tokenizer), self.rows(evaluation, tokenizer)
        base, args, extra = self.parts(plan, device, Path(run_dir) / "checkpoints", tokenizer)
        trainer = recipe.trainer_class(base)(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=stack.peft_config(plan),
            **extra,
        )
        self.prepare(trainer)
        return recipe.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)
