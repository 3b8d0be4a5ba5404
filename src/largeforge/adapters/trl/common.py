"""What the TRL trainers share: model loading, CPU-safe arguments, evaluation, saving."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import structlog

from largeforge.adapters.hf import packed_attention
from largeforge.adapters.system.device import DeviceInfo, detect_device
from largeforge.domain.errors import BackendUnavailableError, TrainingError
from largeforge.domain.training import LoraSpec, TrainingPlan, TrainingResult

log = structlog.get_logger(__name__)


def require_training_stack() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            f"training needs torch, transformers, trl and peft ({exc.name} is missing): "
            "run `make install`"
        ) from exc


def quiet_libraries() -> None:
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    disable_progress_bar()  # our own bar and logs say what is happening
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_model_and_tokenizer(
    model_dir: str, device: DeviceInfo, plan: TrainingPlan
) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = check_qlora(device) if plan.adapter == "qlora" else None
    # Packed rows: per-sample attention instead of a block-diagonal mask over the whole batch.
    attention = {"attn_implementation": packed_attention.register()} if plan.packing is True else {}
    torch.manual_seed(plan.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=quantization, dtype=torch.bfloat16, **attention
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=device.torch_dtype(), **attention
        )
    return model, tokenizer


def lora_config(spec: LoraSpec) -> Any:
    from peft import LoraConfig

    targets: str | list[str]
    targets = "all-linear" if spec.target_modules == ("all-linear",) else list(spec.target_modules)
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        use_dora=spec.use_dora,
    )


def peft_config(plan: TrainingPlan) -> Any:
    return lora_config(plan.lora) if plan.adapter in {"lora", "qlora"} else None


def check_qlora(device: DeviceInfo) -> Any:
    """The 4-bit quantization config QLoRA loads the base with; a clear error where it can't run."""
    import importlib.util

    if device.kind != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        raise BackendUnavailableError(
            "adapter 'qlora' needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); "
            f"this machine has {device.kind}: use adapter 'lora' instead"
        )
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def common_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`TrainingArguments` fields that train well on a CPU (fp32, no checkpointing) and a GPU."""
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
        "load_best_model_at_end": plan.early_stopping_patience > 0,
        "metric_for_best_model": "eval_loss" if plan.early_stopping_patience > 0 else None,
        "greater_is_better": False if plan.early_stopping_patience > 0 else None,
        "save_strategy": "steps" if plan.save_steps > 0 else "no",
        "save_steps": plan.save_steps or 500,
        "save_total_limit": plan.keep_checkpoints,
        "report_to": "none",
        "max_length": plan.max_length,
        "seed": plan.seed,
        "data_seed": plan.seed,
        "use_cpu": device.is_cpu,
        "bf16": device.dtype_name == "bfloat16",
        "fp16": device.dtype_name == "float16" and device.kind == "cuda",
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        # Under torchrun: gloo between CPU processes, the default (nccl) between GPUs.
        "ddp_backend": "gloo" if device.is_cpu and _world_size() > 1 else None,
    }


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def attach_progress(trainer: Any, on_metrics: Any, plan: TrainingPlan, device: DeviceInfo) -> Any:
    """Forward metrics (with MFU) and show our progress bar instead of the printer's raw dicts."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    from largeforge.adapters.system.peak import flops_per_token, matmul_peak
    from largeforge.adapters.trl.callbacks import MetricsForwarder, ProgressBar

    if plan.early_stopping_patience > 0:
        trainer.add_callback(EarlyStoppingCallback(plan.early_stopping_patience))
    base = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n)
    try:
        peak = matmul_peak(device, device.dtype_name) * 1e9
        if not device.is_cpu:  # one peak per GPU; CPU processes share the measured cores
            peak *= trainer.args.world_size
    except Exception as exc:  # the metric is optional; training is not
        log.warning("matmul_peak_unavailable", error=repr(exc))
        peak = None
    forwarder = MetricsForwarder(
        on_metrics,
        peak,
        flops_per_token(base, full_fine_tuning=plan.adapter == "full"),
        trainable_tokens=lambda: getattr(trainer, "trainable_tokens_seen", None),
    )
    trainer.add_callback(forwarder)
    trainer.add_callback(ProgressBar(forwarder))
    trainer.remove_callback(PrinterCallback)
    return forwarder


def log_ready(trainer: Any, device: DeviceInfo, plan: TrainingPlan) -> None:
    params = list(trainer.model.parameters())
    log.info(
        "trainer_ready",
        method=plan.method,
        adapter=plan.adapter,
        device=device.kind,
        dtype=device.dtype_name,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        max_steps=trainer.args.max_steps,
        world_size=trainer.args.world_size,
    )


def evaluate(trainer: Any, has_eval: bool, step: int) -> dict[str, float]:
    """The eval metrics (the forwarder records them in metrics.jsonl), checked for NaN."""
    if not has_eval:
        return {}
    metrics = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)}
    loss = metrics.get("eval_loss")
    if loss is not None and not math.isfinite(loss):
        raise TrainingError(f"evaluation loss is {loss} at step {step}")
    log.info(
        "evaluated",
        step=step,
        **{k: round(v, 4) for k, v in metrics.items() if "loss" in k or "reward" in k},
    )
    return metrics


def run_training(trainer: Any, resume: bool) -> Any:
    """Train, from the latest complete checkpoint when `resume` (from scratch if none)."""
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(Path(trainer.args.output_dir))
        log.info("resuming", checkpoint=checkpoint or "none: starting from step 0")
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"training failed: {exc}") from exc


STAGING = ".staging"
COMPLETE_MARKER = "trainer_state.json"  # written last by the Trainer


def latest_checkpoint(root: Path) -> str | None:
    """The highest-step complete `checkpoint-N` under `root` (staged saves are ignored)."""
    if not root.is_dir():
        return None
    found = []
    for path in root.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / COMPLETE_MARKER).is_file():
            found.append((int(suffix), path))
    return str(max(found)[1]) if found else None


class AtomicCheckpointsMixin:
    """Save each checkpoint into `<output>/.staging/` and rename it into place when complete.

    A kill during a save leaves at most a staging directory, which the next run removes; a
    `checkpoint-N` directory under the output directory is always whole.
    """

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        trainer: Any = self
        main = bool(trainer.args.should_save)  # process 0 renames; every process saves its RNG
        final_root = Path(trainer._get_output_dir(trial=trial))
        staging = final_root / STAGING
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer._get_output_dir = lambda trial=None: str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            del trainer._get_output_dir
        trainer.accelerator.wait_for_everyone()
        if main:
            self._publish(trainer, final_root, staging)
        trainer.accelerator.wait_for_everyone()

    @staticmethod
    def _publish(trainer: Any, final_root: Path, staging: Path) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        name = f"checkpoint-{trainer.state.global_step}"
        target = final_root / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / name, target)
        shutil.rmtree(staging, ignore_errors=True)
        if trainer.state.best_model_checkpoint:
            trainer.state.best_model_checkpoint = str(
                final_root / Path(trainer.state.best_model_checkpoint).name
            )
        if trainer.args.should_save:
            rotate_checkpoints(
                output_dir=str(final_root),
                save_total_limit=trainer.args.save_total_limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
                use_mtime=False,
            )


def save_outputs(trainer: Any, tokenizer: Any, plan: TrainingPlan, run_dir: str) -> str:
    """Save the adapter (LoRA) or the whole model (full) with its tokenizer; return the path."""
    out = Path(run_dir) / ("merged" if plan.adapter == "full" else "adapter")
    trainer.save_model(str(out))  # the Trainer writes from process 0 only
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(out))
        if plan.adapter == "full":
            trainer.model.generation_config.save_pretrained(str(out))
    return str(out)


def start(requested_device: str) -> DeviceInfo:
    """What every trainer does first: check the stack, quiet the libraries, pick the device."""
    require_training_stack()
    quiet_libraries()
    return detect_device(requested_device)


def setup(requested_device: str, model_dir: str, plan: TrainingPlan) -> tuple[DeviceInfo, Any, Any]:
    """`start`, then load the model and tokenizer. Returns (device, model, tokenizer)."""
    device = start(requested_device)
    model, tokenizer = load_model_and_tokenizer(model_dir, device, plan)
    return device, model, tokenizer


class TrainableTokensMixin:
    """Counts the label positions that carry loss (in this process), for metrics.jsonl."""

    trainable_tokens_seen: int = 0

    def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        labels = inputs.get("labels") if hasattr(inputs, "get") else None
        if labels is not None:  # causal LM: position t predicts label t + 1
            self.trainable_tokens_seen += int((labels[..., 1:] != -100).sum())
        return super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]


def with_atomic_checkpoints(trainer_class: type) -> type:
    """`trainer_class` with atomic checkpoints and trainable-token counting in front of it."""
    return type(
        f"LargeForge{trainer_class.__name__}",
        (AtomicCheckpointsMixin, TrainableTokensMixin, trainer_class),
        {},
    )


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
    output = run_training(trainer, resume)
    steps = int(trainer.state.global_step)
    after = evaluate(trainer, eval_n > 0, step=steps)
    margin_before, margin_after = (
        before.get("eval_rewards/margins"),
        after.get("eval_rewards/margins"),
    )
    return TrainingResult(
        adapter_dir=save_outputs(trainer, tokenizer, plan, run_dir),
        steps=steps,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        eval_loss_before=before.get("eval_loss"),
        eval_loss_after=after.get("eval_loss"),
        train_examples=train_n,
        eval_examples=eval_n,
        eval_reward_margin_before=margin_before,
        eval_reward_margin_after=margin_after,
    )
