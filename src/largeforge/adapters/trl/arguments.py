"""`TrainingArguments` fields from a plan, for a CPU or a GPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.precision import training_precision
from largeforge.domain.training import TrainingPlan


def common_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`TrainingArguments` fields that train well on a CPU (no checkpointing) and a GPU."""
    early_stopping = plan.early_stopping_patience > 0
    precision = training_precision(device, plan)
    return {
        "output_dir": str(work_dir),
        "max_steps": plan.max_steps if plan.max_steps > 0 else -1,
        "num_train_epochs": plan.epochs,
        "per_device_train_batch_size": plan.batch_size,
        "per_device_eval_batch_size": max(plan.batch_size, 8),
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "learning_rate": plan.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": plan.warmup_steps,
        "logging_steps": plan.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "steps" if plan.eval_steps > 0 else "no",
        "eval_steps": plan.eval_steps or None,
        "load_best_model_at_end": early_stopping,
        "metric_for_best_model": "eval_loss" if early_stopping else None,
        "greater_is_better": False if early_stopping else None,
        "save_strategy": "steps" if plan.save_steps > 0 else "no",
        "save_steps": plan.save_steps or 500,
        "save_total_limit": plan.keep_checkpoints,
        "report_to": "none",
        "max_length": plan.max_length,
        "seed": plan.seed,
        "data_seed": plan.seed,
        "use_cpu": device.is_cpu,
        # Autocast where the precision uses it (not for LoRA on a bf16 CPU: a bf16 base there).
        "bf16": precision.bf16_autocast,
        "fp16": precision.fp16_autocast,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        # Under torchrun: gloo between CPU processes, the default (nccl) between GPUs.
        "ddp_backend": "gloo" if device.is_cpu and world_size() > 1 else None,
    }


def world_size() -> int:
    """Processes in this run (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
