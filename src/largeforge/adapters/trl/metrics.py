"""What a run reports while it trains: metrics with MFU, trainable tokens, TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.precision import training_precision
from largeforge.domain.errors import BackendUnavailableError
from largeforge.domain.training import AdapterKind, TrainingPlan

log = structlog.get_logger(__name__)


def attach_progress(trainer: Any, on_metrics: Any, plan: TrainingPlan, device: DeviceInfo) -> Any:
    """Forward metrics (with MFU) and show our progress bar instead of the printer's raw dicts."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    from largeforge.adapters.system.peak import flops_per_token, matmul_peak
    from largeforge.adapters.trl.callbacks import MetricsForwarder, ProgressBar

    if plan.early_stopping_patience > 0:
        trainer.add_callback(EarlyStoppingCallback(plan.early_stopping_patience))
    base = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n)
    try:  # the peak of the dtype the matmuls run in (bf16 on a bf16 CPU), not always fp32's
        peak = matmul_peak(device, training_precision(device, plan).compute) * 1e9
        if not device.is_cpu:  # one peak per GPU; CPU processes share the measured cores
            peak *= trainer.args.world_size
    except Exception as exc:  # the metric is optional; training is not
        log.warning("matmul_peak_unavailable", error=repr(exc))
        peak = None
    forwarder = MetricsForwarder(
        on_metrics,
        peak,
        flops_per_token(base, full_fine_tuning=plan.adapter is AdapterKind.FULL),
        trainable_tokens=lambda: getattr(trainer, "trainable_tokens_seen", None),
    )
    trainer.add_callback(forwarder)
    trainer.add_callback(ProgressBar(forwarder))
    trainer.remove_callback(PrinterCallback)
    return forwarder


def attach_tensorboard(trainer: Any, log_dir: Path) -> None:
    """Write the Trainer's logs (loss, lr, grad norm, eval loss ...) as TensorBoard events."""
    from transformers.integrations import TensorBoardCallback

    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise BackendUnavailableError(
            "training.tensorboard needs tensorboardX: pip install tensorboardX"
        ) from None
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(logdir=str(log_dir))))


def log_ready(trainer: Any, device: DeviceInfo, plan: TrainingPlan) -> None:
    """One `trainer_ready` line: method, adapter, device, parameter counts, steps."""
    params = list(trainer.model.parameters())
    log.info(
        "trainer_ready",
        method=plan.method.value,
        adapter=plan.adapter.value,
        device=device.kind,
        dtype=device.dtype_name,
        weights_dtype=training_precision(device, plan).weights,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        max_steps=trainer.args.max_steps,
        world_size=trainer.args.world_size,
    )


class TrainableTokensMixin:
    """Counts the label positions that carry loss (in this process), for metrics.jsonl."""

    trainable_tokens_seen: int = 0

    def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        labels = inputs.get("labels") if hasattr(inputs, "get") else None
        if labels is not None:  # causal LM: position t predicts label t + 1
            self.trainable_tokens_seen += int((labels[..., 1:] != -100).sum())
        return super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]
