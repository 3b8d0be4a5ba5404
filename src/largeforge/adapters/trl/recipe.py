"""The fit recipe every TRL trainer follows: attach metrics, evaluate, train (or resume),
evaluate, save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.checkpoints import AtomicCheckpointsMixin, train_from_checkpoint
from largeforge.adapters.trl.evaluation import evaluate
from largeforge.adapters.trl.metrics import (
    TrainableTokensMixin,
    attach_progress,
    attach_tensorboard,
    log_ready,
)
from largeforge.domain.training import TrainingPlan, TrainingResult


def trainer_class(base: type) -> type:
    """`base` (a TRL trainer) with atomic checkpoints and trainable-token counting."""
    return type(
        f"LargeForge{base.__name__}",
        (AtomicCheckpointsMixin, TrainableTokensMixin, base),
        {},
    )


def save_outputs(trainer: Any, tokenizer: Any, plan: TrainingPlan, run_dir: str) -> str:
    """Save the adapter (LoRA) or the whole model (full) with its tokenizer; return the path."""
    whole = plan.adapter.writes_whole_model
    out = Path(run_dir) / ("merged" if whole else "adapter")
    trainer.save_model(str(out))  # the Trainer writes from process 0 only
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(out))
        if whole:
            trainer.model.generation_config.save_pretrained(str(out))
    return str(out)


def fit(
    trainer: Any,
    tokenizer: Any,
    plan: TrainingPlan,
    device: DeviceInfo,
    run_dir: str,
    on_metrics: Any,
    resume: bool,
) -> TrainingResult:
    """The shared recipe: attach metrics, evaluate, train (or resume), evaluate, save."""
    attach_progress(trainer, on_metrics, plan, device)
    if plan.tensorboard:
        attach_tensorboard(trainer, Path(run_dir) / "tensorboard")
    log_ready(trainer, device, plan)
    train_n = len(trainer.train_dataset)
    eval_n = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    before = evaluate(trainer, eval_n > 0, step=0)
    output = train_from_checkpoint(trainer, resume)
    steps = int(trainer.state.global_step)
    after = evaluate(trainer, eval_n > 0, step=steps)
    return TrainingResult(
        adapter_dir=save_outputs(trainer, tokenizer, plan, run_dir),
        steps=steps,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        eval_loss_before=before.get("eval_loss"),
        eval_loss_after=after.get("eval_loss"),
        train_examples=train_n,
        eval_examples=eval_n,
        eval_reward_margin_before=before.get("eval_rewards/margins"),
        eval_reward_margin_after=after.get("eval_rewards/margins"),
        eval_reward_before=before.get("eval_reward"),
        eval_reward_after=after.get("eval_reward"),
    )
