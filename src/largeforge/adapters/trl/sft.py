"""Supervised fine-tuning with TRL's `SFTTrainer`: LoRA (PEFT) or full fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl import common
from largeforge.application.ports import MetricsCallback
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.training import TrainingPlan, TrainingResult, decide_packing


def to_columns(examples: Sequence[EncodedExample]) -> dict[str, list[list[int]]]:
    """Pre-tokenized columns for TRL: `input_ids` and `labels` (-100 where not trained)."""
    return {
        "input_ids": [list(e.input_ids) for e in examples],
        "labels": [e.labels() for e in examples],
    }


class TrlSftTrainer:
    """`ModelTrainer` over TRL SFT. Trains exactly the masks LargeForge computed."""

    def __init__(self, device: str = "auto") -> None:
        self._device = device

    def train(
        self,
        plan: TrainingPlan,
        model_dir: str,
        train: Sequence[EncodedExample],
        evaluation: Sequence[EncodedExample],
        run_dir: str,
        on_metrics: MetricsCallback,
        resume: bool = False,
    ) -> TrainingResult:
        device = common.start(self._device)
        plan = self.resolve_packing(plan, train, device)
        pack = plan.packing is True
        model, tokenizer = common.load_model_and_tokenizer(model_dir, device, plan)
        from datasets import Dataset  # after setup: it names a missing stack with the fix
        from trl import SFTConfig, SFTTrainer

        train_ds = Dataset.from_dict(to_columns(train))
        eval_ds = Dataset.from_dict(to_columns(evaluation))
        args = SFTConfig(
            **common.common_arguments(plan, device, Path(run_dir) / "checkpoints"),
            # Packing: best-fit decreasing into max_length rows, padding-free, with position ids
            # restarting per sample so that packed samples do not attend to each other.
            packing=pack,
            packing_strategy="bfd",
            padding_free=pack,
            # Without packing, batches of similar lengths: far less padding (2x faster here).
            train_sampling_strategy="random" if pack else "group_by_length",
        )
        trainer = common.with_atomic_checkpoints(SFTTrainer)(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if len(eval_ds) else None,
            processing_class=tokenizer,
            peft_config=common.peft_config(plan),
        )
        if pack:
            log_packing(trainer.train_dataset, plan.max_length)
        return common.fit(trainer, tokenizer, plan, device, run_dir, on_metrics, resume)

    @staticmethod
    def resolve_packing(
        plan: TrainingPlan, train: Sequence[EncodedExample], device: DeviceInfo
    ) -> TrainingPlan:
        """The plan with `packing: auto` decided for these samples on `device` (logged)."""
        lengths = [e.length for e in train]
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
