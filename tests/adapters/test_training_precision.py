"""Training precision: bf16 where the CPU has bf16 instructions (LoRA: bf16 frozen base, fp32
adapter; full: fp32 master weights under autocast), fp32 elsewhere or when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.hf.chat_template import HfEncoderFactory
from largeforge.adapters.system.device import DeviceInfo, detect_device
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.precision import resolve_precision, training_precision
from largeforge.config import load_run_config
from largeforge.domain.errors import ConfigError
from largeforge.domain.training import AdapterKind, TrainingPlan
from tests.adapters.test_trl_training import tiny_plan
from tests.conftest import make_example

BF16_CPU = detect_device("cpu", flags=["fpu", "avx512f", "avx512_bf16"])
FP32_CPU = detect_device("cpu", flags=["fpu", "avx2"])


def arguments(device: DeviceInfo, plan: TrainingPlan) -> dict[str, Any]:
    return common_arguments(plan, device, Path("unused"))


def test_auto_trains_lora_on_a_bf16_base_without_autocast_on_a_bf16_cpu() -> None:
    device = resolve_precision(BF16_CPU, "auto")
    assert device.dtype_name == "bfloat16"
    assert "avx512_bf16" in device.dtype_reason
    chosen = training_precision(device, tiny_plan())
    assert (chosen.compute, chosen.weights, chosen.autocast) == ("bfloat16", "bfloat16", False)
    args = arguments(device, tiny_plan())
    assert (args["bf16"], args["fp16"], args["use_cpu"]) == (False, False, True)


def test_auto_full_fine_tuning_keeps_fp32_master_weights_under_bf16_autocast() -> None:
    plan = tiny_plan(adapter=AdapterKind.FULL)
    chosen = training_precision(BF16_CPU, plan)
    assert (chosen.compute, chosen.weights, chosen.autocast) == ("bfloat16", "float32", True)
    assert arguments(BF16_CPU, plan)["bf16"] is True


def test_auto_stays_fp32_on_a_cpu_without_bf16_instructions() -> None:
    device = resolve_precision(FP32_CPU, "auto")
    for plan in (tiny_plan(), tiny_plan(adapter=AdapterKind.FULL)):
        chosen = training_precision(device, plan)
        assert (chosen.compute, chosen.weights, chosen.autocast) == ("float32", "float32", False)
        assert arguments(device, plan)["bf16"] is False


def test_fp32_stays_available_and_bf16_is_refused_where_the_cpu_lacks_it() -> None:
    device = resolve_precision(BF16_CPU, "fp32")
    assert device.dtype_name == "float32"
    assert training_precision(device, tiny_plan()).weights == "float32"
    assert arguments(device, tiny_plan())["bf16"] is False
    assert resolve_precision(BF16_CPU, "bf16").dtype_name == "bfloat16"
    with pytest.raises(ConfigError, match="bf16 needs a device that computes bf16"):
        resolve_precision(FP32_CPU, "bf16")


def test_the_run_file_and_the_command_line_set_the_precision() -> None:
    assert load_run_config(None).to_plan().precision == "auto"
    overridden = load_run_config(None, {"training.precision": "fp32"})
    assert overridden.to_plan().precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_plan(precision="fp16")


def test_lora_trains_in_bf16_on_a_bf16_cpu(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bf16 frozen base with fp32 trainable LoRA weights lowers the loss; MFU uses the bf16
    peak. The device is built by hand, so this runs on any CPU (bf16 is emulated without the
    instructions)."""
    import torch
    from structlog.testing import capture_logs

    from largeforge.adapters.system import peak
    from largeforge.adapters.trl import recipe, stack
    from largeforge.adapters.trl.sft import TrlSftTrainer

    monkeypatch.setattr(stack, "detect_device", lambda prefer: BF16_CPU)
    peaks: list[str] = []
    monkeypatch.setattr(peak, "matmul_peak", lambda device, dtype: peaks.append(dtype) or 1e3)
    seen: dict[str, set[Any]] = {"trainable": set(), "frozen": set()}
    original = recipe.train_from_checkpoint

    def record(trainer: Any, resume: bool) -> Any:
        for _, param in trainer.model.named_parameters():
            seen["trainable" if param.requires_grad else "frozen"].add(param.dtype)
        assert trainer.args.bf16 is False
        return original(trainer, resume)

    monkeypatch.setattr(recipe, "train_from_checkpoint", record)
    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [
        encoder.encode(make_example(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}."))
        for i in range(16)
    ]
    with capture_logs() as logs:
        result = TrlSftTrainer(device="cpu").train(
            tiny_plan(max_steps=4, logging_steps=2, save_steps=0),
            str(tiny_model_dir),
            examples[:12],
            examples[12:],
            str(tmp_path),
            lambda metrics: None,
        )
    assert seen == {"trainable": {torch.float32}, "frozen": {torch.bfloat16}}
    assert peaks == ["bfloat16"]
    assert result.eval_loss_after is not None
    assert result.eval_loss_before is not None
    assert result.eval_loss_after < result.eval_loss_before
    [event] = [e for e in logs if e["event"] == "training_precision"]
    assert (event["compute"], event["weights"], event["autocast"]) == (
        "bfloat16",
        "bfloat16",
        False,
    )
    assert "avx512_bf16" in event["reason"]
