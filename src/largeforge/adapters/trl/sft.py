"""Supervised fine-tuning with TRL's `SFTTrainer`: LoRA (PEFT) or full fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import compact_head, recipe, stack
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.application.ports import MetricsCallback
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingResult, TrainingUnit, decide_packing


def to_columns(examples: Sequence[EncodedExample]) -> dict[str, list[list[int]]]:
    """Pre-tokenized columns for TRL: `input_ids` and `labels` (-100 where not trained)."""
    return {
        "input_ids": [list(e.input_ids) for e in examples],
        "labels": [e.labels() for e in examples],
    }


def encoded(units: Sequence[TrainingUnit]) -> list[EncodedExample]:
    """The units as encoded conversations; a `TrainingError` if any is not one."""
    wrong = [u for u in units if not isinstance(u, EncodedExample)]
    if wrong:
        raise TrainingError(f"SFT trains on encoded conversations, got {type(wrong[0]).__name__}")
    return [u for u in units if isinstance(u, EncodedExample)]


# What TRL's SFT loss and metrics read from the fused head (loss, entropy, token accuracy).
SFT_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")


class TrlSftTrainer:
    """`ModelTrainer` for `TrainingMethod.SFT` over TRL. Trains exactly the masks LargeForge
    computed."""

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
        device = stack.start(self._device, plan)
        train, evaluation = encoded(train), encoded(evaluation)
        plan = self.resolve_packing(plan, train, device)
        pack = plan.packing is True
        model, tokenizer = stack.load_model_and_tokenizer(model_dir, device, plan)
        from datasets import Dataset  # after setup: it names a missing stack with the fix
        from trl import SFTConfig, SFTTrainer

        train_ds = Dataset.from_dict(to_columns(train))
        eval_ds = Dataset.from_dict(to_columns(evaluation))
        args = SFTConfig(
            **common_arguments(plan, device, Path(run_dir) / "checkpoints"),
            # Packing: best-fit decreasing into max_length rows, padding-free, with position ids
            # restarting per sample so that packed samples do not attend to each other.
            packing=pack,
            packing_strategy="bfd",
            padding_free=pack,
            # Without packing, batches of similar lengths: far less padding (2x faster here).
            train_sampling_strategy="random" if pack else "group_by_length",
        )
        trainer = recipe.trainer_class(SFTTrainer)(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=stack.peft_config(plan),
        )
        compact_head.install(trainer.model, SFT_HEAD_OUTPUTS)
        if pack:
            log_packing(trainer.train_dataset, plan.max_length)
        return recipe.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)

    @staticmethod
    def resolve_packing(
        plan: TrainingPlan, train: Sequence[TrainingUnit], device: DeviceInfo
    ) -> TrainingPlan:
        """The plan with `packing: auto` decided for these samples on `device` (logged)."""
        lengths = [e.length for e in encoded(train)]
        decision = decide_packing(plan.packing, lengths, plan.max_length, not device.is_cpu)
        structlog.get_logger(__name__).info(
            "packing", enabled=decision.pack, reason=decision.reason
        )
        return replace(plan, packing=decision.pack)


def packing_efficiency(dataset: Any, max_length: int) -> float:
    """Real tokens over the capacity of the packed rows (1.0: no slot wasted)."""
    rows = len(dataset)
    tokens = sum(sum(lengths) for lengths in dataset["seq_lengths"])
    return tokens / (rows * max_length) if rows else 0.0


def log_packing(dataset: Any, max_length: int) -> None:
    structlog.get_logger(__name__).info(
        "packed",
        rows=len(dataset),
        samples=sum(len(lengths) for lengths in dataset["seq_lengths"]),
        efficiency=round(packing_efficiency(dataset, max_length), 4),
    )
