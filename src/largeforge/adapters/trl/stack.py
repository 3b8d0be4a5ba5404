"""The training stack: check it is installed, pick the device, load the model (QLoRA too)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from largeforge.adapters.hf import packed_attention
from largeforge.adapters.system.device import DeviceInfo, detect_device
from largeforge.adapters.system.signals import StopRequested, stop_requested
from largeforge.adapters.trl.precision import resolve_precision, training_precision
from largeforge.domain.errors import BackendUnavailableError
from largeforge.domain.training import AdapterKind, LoraSpec, TrainingPlan

F = TypeVar("F", bound=Callable[..., Any])
log = structlog.get_logger(__name__)


def stop_wins(train: F) -> F:
    """A trainer's `train` whose errors, once a stop was requested (SIGTERM), are the stop.

    The signal handler raises where the signal lands: inside an import or a library's own
    except-clause it can surface as an ImportError or another error, and the run would be
    recorded as failed instead of interrupted."""

    @functools.wraps(train)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return train(*args, **kwargs)
        except Exception as exc:
            if stop_requested.is_set():
                raise StopRequested(f"stop requested ({type(exc).__name__} raised)") from exc
            raise

    return wrapper  # type: ignore[return-value]


def require_training_stack() -> None:
    """`BackendUnavailableError` naming the fix when torch, transformers, trl or peft is missing."""
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
    """Silence the libraries' own progress bars and info logs (ours say what is happening)."""
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def start(requested_device: str, plan: TrainingPlan) -> DeviceInfo:
    """What every trainer does first: check the stack, quiet the libraries, pick the device and
    the dtype training computes in (`plan.precision`), logged with the reason."""
    require_training_stack()
    quiet_libraries()
    device = resolve_precision(detect_device(requested_device), plan.precision)
    chosen = training_precision(device, plan)
    log.info(
        "training_precision",
        device=device.kind,
        compute=device.dtype_name,
        weights=chosen.weights,
        autocast=chosen.autocast,
        reason=device.dtype_reason,
    )
    return device


def setup(requested_device: str, model_dir: str, plan: TrainingPlan) -> tuple[DeviceInfo, Any, Any]:
    """`start`, then load the model and tokenizer. Returns (device, model, tokenizer)."""
    device = start(requested_device, plan)
    model, tokenizer = load_model_and_tokenizer(model_dir, device, plan)
    return device, model, tokenizer


def load_model_and_tokenizer(
    model_dir: str, device: DeviceInfo, plan: TrainingPlan
) -> tuple[Any, Any]:
    """The model (4-bit for QLoRA) and its tokenizer, with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = check_qlora(device) if plan.adapter.quantized_base else None
    precision = training_precision(device, plan)
    # Packed rows: length-grouped attention instead of a block-diagonal mask over the whole
    # batch. A bf16 CPU: the same attention trains in fp32 (its backward is far faster).
    cpu_bf16 = device.is_cpu and precision.compute == "bfloat16"
    use_ours = plan.packing is True or (cpu_bf16 and quantization is None)
    attention = {"attn_implementation": packed_attention.register()} if use_ours else {}
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
        # LoRA on a bf16 CPU: a bf16 base; PEFT keeps the adapter fp32 (autocast_adapter_dtype).
        weights = getattr(torch, precision.weights)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights, **attention)
    return model, tokenizer


def lora_config(spec: LoraSpec) -> Any:
    """PEFT's `LoraConfig` for `spec` (DoRA when `use_dora`)."""
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
    """The LoRA config for adapter runs; None for full fine-tuning."""
    return None if plan.adapter is AdapterKind.FULL else lora_config(plan.lora)


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
