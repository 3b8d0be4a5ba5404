"""TRL SFT + PEFT LoRA training and the verified merge, on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.hf.chat_template import HfEncoderFactory
from largeforge.adapters.peft.merge import PeftLoraMerger
from largeforge.adapters.system.device import detect_device
from largeforge.adapters.trl.sft import TrlSftTrainer, to_columns
from largeforge.domain import LoraSpec, StepMetrics, TrainingPlan
from largeforge.domain.datasets import EncodedExample
from largeforge.domain.formats import DatasetSpec
from tests.conftest import make_example


def tiny_plan(**fields: Any) -> TrainingPlan:
    """A short LoRA (r=4) plan for the tiny model; `fields` override the defaults."""
    defaults: dict[str, Any] = {
        "model": "tiny",
        "datasets": (DatasetSpec("mem"),),
        "lora": LoraSpec(rank=4, alpha=8),
        "batch_size": 4,
        "learning_rate": 5e-3,
        "warmup_steps": 0,
        "max_length": 64,
    }
    return TrainingPlan(**(defaults | fields))


def test_columns_carry_labels_only_where_trained() -> None:
    encoded = EncodedExample((5, 6, 7), (False, True, True))
    assert to_columns([encoded]) == {"input_ids": [[5, 6, 7]], "labels": [[-100, 6, 7]]}


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [
        encoder.encode(make_example(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}."))
        for i in range(24)
    ]
    plan = tiny_plan(max_steps=6, logging_steps=2, tensorboard=True)
    run_dir = tmp_path_factory.mktemp("run")
    metrics: list[StepMetrics] = []
    result = TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), examples[:20], examples[20:], str(run_dir), metrics.append
    )
    return {"result": result, "metrics": metrics, "run_dir": run_dir}


def test_training_writes_an_adapter_and_reports_metrics(trained: dict[str, object]) -> None:
    result = trained["result"]
    metrics = trained["metrics"]
    assert result.steps == 6  # type: ignore[attr-defined]
    assert result.train_examples == 20
    assert result.eval_examples == 4
    adapter = Path(result.adapter_dir)  # type: ignore[attr-defined]
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4
    train_steps = [m for m in metrics if m.loss is not None]  # type: ignore[attr-defined]
    assert [m.step for m in train_steps] == [1, 2, 4, 6]
    assert all(m.learning_rate is not None for m in train_steps)
    assert any(m.tokens_per_second for m in train_steps)
    assert any(m.mfu and 0 < m.mfu < 1 for m in train_steps)
    counts = [m.trainable_tokens for m in train_steps]
    assert counts == sorted(counts)
    assert (counts[0] or 0) > 0
    assert all(m.peak_memory_mb and m.peak_memory_mb > 100 for m in train_steps)
    evals = [m for m in metrics if m.eval_loss is not None]  # type: ignore[attr-defined]
    assert [m.step for m in evals] == [0, 6]
    # A random model learns this pattern quickly at lr 5e-3.
    assert result.eval_loss_after < result.eval_loss_before  # type: ignore[attr-defined]


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files under `log_dir` (TFRecord framing, Event protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_events_hold_the_loss_curve(trained: dict[str, object]) -> None:
    scalars = tensorboard_scalars(Path(str(trained["run_dir"])) / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 4, 6]
    assert "train/learning_rate" in scalars
    assert all(value > 0 for _, value in scalars["train/loss"])


def test_merge_matches_base_plus_adapter(
    trained: dict[str, object], tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merger = PeftLoraMerger(tolerance=1e-4)
    out = merger.merge(str(tiny_model_dir), trained["result"].adapter_dir, str(tmp_path / "merged"))  # type: ignore[attr-defined]
    assert merger.last_max_abs_diff is not None
    assert merger.last_max_abs_diff < 1e-4
    merged_dir = Path(out)
    assert not list(merged_dir.glob("adapter_*"))
    model = AutoModelForCausalLM.from_pretrained(merged_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer("hello", return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**ids).logits, base(**ids).logits)


def test_full_fine_tuning_writes_a_whole_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [encoder.encode(make_example(f"Say {i}", f"{i} {i} {i}.")) for i in range(12)]
    plan = tiny_plan(
        adapter="full", lora=LoraSpec(), max_steps=4, learning_rate=1e-3, logging_steps=1
    )
    result = TrlSftTrainer(device="cpu").train(
        replace(plan),
        str(tiny_model_dir),
        examples[:10],
        examples[10:],
        str(tmp_path),
        lambda m: None,
    )
    out = Path(result.adapter_dir)
    assert out.name == "merged"
    assert (out / "model.safetensors").is_file()
    assert (out / "generation_config.json").is_file()
    assert result.eval_loss_after < result.eval_loss_before


def test_dpo_with_lora_increases_the_reward_margin(tiny_model_dir: Path, tmp_path: Path) -> None:
    from largeforge.adapters.trl.dpo import TrlDpoTrainer
    from largeforge.domain import Message, Role
    from largeforge.domain.datasets import PreferencePair

    pairs = [
        PreferencePair(
            prompt=(Message(Role.USER, f"Is {i} even?"),),
            chosen=(Message(Role.ASSISTANT, "yes" if i % 2 == 0 else "no"),),
            rejected=(Message(Role.ASSISTANT, "banana banana"),),
        )
        for i in range(16)
    ]
    plan = tiny_plan(method="dpo", max_steps=6, logging_steps=2)
    metrics: list[StepMetrics] = []
    result = TrlDpoTrainer(device="cpu").train(
        plan, str(tiny_model_dir), pairs[:12], pairs[12:], str(tmp_path), metrics.append
    )
    assert result.eval_reward_margin_before == pytest.approx(0.0, abs=1e-4)
    assert result.eval_reward_margin_after is not None
    assert result.eval_reward_margin_after > 0.0
    assert result.eval_loss_after < result.eval_loss_before
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()
    assert any(m.reward_margin is not None for m in metrics)


def test_gradient_accumulation_is_loss_correct(tiny_model_dir: Path, tmp_path: Path) -> None:
    """batch 4 x accumulation 1 and batch 1 x accumulation 4: same loss and gradient norm."""
    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    # Different lengths, so averaging per micro-batch instead of per token would show.
    examples = [
        encoder.encode(make_example(f"Question {i}?", " ".join(["word"] * (3 + 7 * i))))
        for i in range(4)
    ]
    logged = {}
    for batch, accumulation in ((4, 1), (1, 4)):
        plan = tiny_plan(
            max_steps=1,
            batch_size=batch,
            gradient_accumulation_steps=accumulation,
            learning_rate=1e-3,
            logging_steps=1,
            max_length=128,
            save_steps=0,
        )
        metrics: list[StepMetrics] = []
        TrlSftTrainer(device="cpu").train(
            plan, str(tiny_model_dir), examples, [], str(tmp_path / f"b{batch}"), metrics.append
        )
        (step,) = [m for m in metrics if m.loss is not None]
        logged[batch] = step
    assert logged[1].loss == pytest.approx(logged[4].loss, rel=1e-4)
    assert logged[1].grad_norm == pytest.approx(logged[4].grad_norm, rel=1e-3)


def test_qlora_without_cuda_fails_with_the_fix(tiny_model_dir: Path, tmp_path: Path) -> None:
    from largeforge.domain import BackendUnavailableError

    plan = TrainingPlan(model="tiny", datasets=(DatasetSpec("mem"),), adapter="qlora")
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU and bitsandbytes"):
        TrlSftTrainer(device="cpu").train(plan, str(tiny_model_dir), [], [], str(tmp_path), print)


def test_dora_is_passed_to_peft() -> None:
    from largeforge.adapters.trl.stack import lora_config

    assert lora_config(LoraSpec(use_dora=True)).use_dora is True


def test_periodic_evaluation_and_early_stopping_arguments(tmp_path: Path) -> None:
    from largeforge.adapters.system.device import DeviceInfo
    from largeforge.adapters.trl.arguments import common_arguments

    plan = TrainingPlan(
        model="m",
        datasets=(DatasetSpec("d"),),
        eval_steps=5,
        save_steps=10,
        early_stopping_patience=2,
    )
    args = common_arguments(plan, DeviceInfo("cpu", "cpu", "float32"), tmp_path)
    assert (args["eval_strategy"], args["eval_steps"]) == ("steps", 5)
    assert args["load_best_model_at_end"] is True
    assert args["metric_for_best_model"] == "eval_loss"
    with pytest.raises(ValueError, match="save_steps a multiple of eval_steps"):
        TrainingPlan(
            model="m",
            datasets=(DatasetSpec("d"),),
            eval_steps=3,
            save_steps=10,
            early_stopping_patience=1,
        )


def test_evaluation_every_n_steps_is_recorded(tiny_model_dir: Path, tmp_path: Path) -> None:
    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [encoder.encode(make_example(f"Say {i}", f"{i} and {i}.")) for i in range(12)]
    plan = tiny_plan(
        max_steps=4, logging_steps=1, eval_steps=2, save_steps=2, early_stopping_patience=3
    )
    metrics: list[StepMetrics] = []
    TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), examples[:8], examples[8:], str(tmp_path), metrics.append
    )
    assert [m.step for m in metrics if m.eval_loss is not None] == [0, 2, 4, 4]


def test_packed_samples_do_not_attend_to_each_other(tiny_model_dir: Path) -> None:
    """The mechanism packing relies on: position ids restarting per sample, no attention mask,
    and no KV cache (TRL's `compute_loss` passes `use_cache=False`; with a cache transformers
    does not look for packed sequences)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    first, second = torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[11, 12, 13]])
    packed = torch.cat([first, second], dim=1)
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    with torch.no_grad():
        alone = model(input_ids=second).logits
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, 5:]
        leaky = model(input_ids=packed, use_cache=False).logits[:, 5:]  # the second sees the first
    assert torch.allclose(alone, together, atol=1e-5)
    assert not torch.allclose(alone, leaky, atol=1e-3)


def test_packed_training_runs_and_learns(tiny_model_dir: Path, tmp_path: Path) -> None:
    from largeforge.adapters.trl.sft import packing_efficiency

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [encoder.encode(make_example(f"Hi {i}", f"{i} {i}.")) for i in range(40)]
    plan = tiny_plan(
        max_steps=4, batch_size=2, logging_steps=1, max_length=256, packing=True, save_steps=0
    )
    metrics: list[StepMetrics] = []
    result = TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), examples[:36], examples[36:], str(tmp_path), metrics.append
    )
    assert result.train_examples < 36  # many samples per packed row
    assert result.eval_loss_after < result.eval_loss_before
    from datasets import Dataset

    rows = Dataset.from_dict({"seq_lengths": [[100, 100], [56]]})
    assert packing_efficiency(rows, 256) == pytest.approx(256 / 512)


def test_packing_auto_is_decided_for_the_device(tiny_model_dir: Path) -> None:
    """On this CPU `auto` stays unpacked even for short samples; explicit settings are kept."""
    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    short = [encoder.encode(make_example(f"Hi {i}", "Yes.")) for i in range(8)]
    cpu = detect_device("cpu")
    assert TrlSftTrainer.resolve_packing(tiny_plan(packing="auto"), short, cpu).packing is False
    assert TrlSftTrainer.resolve_packing(tiny_plan(packing=True), short, cpu).packing is True


class RecordingTrainer:
    """What `train_from_checkpoint` uses of a Trainer: its output directory and `train`."""

    def __init__(self, output_dir: Path) -> None:
        self.args = type("Args", (), {"output_dir": str(output_dir)})()
        self.resumed_from: str | None = "not called"

    def train(self, resume_from_checkpoint: str | None = None) -> str:
        self.resumed_from = resume_from_checkpoint
        return "output"


def test_resume_picks_the_latest_complete_checkpoint_and_says_so(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from largeforge.adapters.trl.checkpoints import train_from_checkpoint

    for step in (3, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-9").mkdir()  # torn: no trainer state
    (tmp_path / ".staging" / "checkpoint-12").mkdir(parents=True)  # a save that never finished
    trainer = RecordingTrainer(tmp_path)
    with capture_logs() as logs:
        assert train_from_checkpoint(trainer, resume=True) == "output"
    assert trainer.resumed_from == str(tmp_path / "checkpoint-6")
    assert [(e["event"], e.get("checkpoint")) for e in logs] == [
        ("resuming", str(tmp_path / "checkpoint-6"))
    ]


def test_resume_without_a_checkpoint_is_not_logged_as_resuming(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from largeforge.adapters.trl.checkpoints import train_from_checkpoint

    (tmp_path / "checkpoint-9").mkdir()  # torn
    trainer = RecordingTrainer(tmp_path)
    with capture_logs() as logs:
        train_from_checkpoint(trainer, resume=True)
    assert trainer.resumed_from is None
    assert [e["event"] for e in logs] == ["no_checkpoint"]
    with capture_logs() as logs:
        train_from_checkpoint(trainer, resume=False)
    assert logs == []


def test_dora_trains_its_magnitude_vectors(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    examples = [
        encoder.encode(make_example(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}."))
        for i in range(12)
    ]
    plan = tiny_plan(
        lora=LoraSpec(rank=4, alpha=8, use_dora=True), max_steps=4, logging_steps=1, save_steps=0
    )
    result = TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), examples[:10], examples[10:], str(tmp_path), lambda m: None
    )
    adapter = Path(result.adapter_dir)
    assert json.loads((adapter / "adapter_config.json").read_text())["use_dora"] is True
    weights = load_file(adapter / "adapter_model.safetensors")
    magnitudes = {k: v for k, v in weights.items() if "lora_magnitude_vector" in k}
    assert magnitudes
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for key, magnitude in magnitudes.items():
        layer = key.removeprefix("base_model.model.").split(".lora_magnitude_vector")[0]
        start = torch.linalg.norm(base[f"{layer}.weight"], dim=1)  # DoRA starts at ||W|| per row
        assert magnitude.shape == start.shape
        assert not torch.allclose(magnitude, start, atol=1e-5), key
    assert result.eval_loss_after < result.eval_loss_before


def test_early_stopping_keeps_and_returns_the_best_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Training on "yes" answers while evaluating on "no" answers: the eval loss rises after
    the first step, so the best checkpoint is not the last one."""
    import torch
    from safetensors.torch import load_file

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    train = [encoder.encode(make_example(f"Say {i}", "yes " * 8)) for i in range(8)]
    evaluation = [encoder.encode(make_example(f"Say {i}", "no " * 8)) for i in range(4)]
    plan = tiny_plan(
        learning_rate=0.05,
        max_steps=6,
        logging_steps=1,
        eval_steps=1,
        save_steps=1,
        early_stopping_patience=1,
        keep_checkpoints=1,
    )
    metrics: list[StepMetrics] = []
    result = TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), train, evaluation, str(tmp_path), metrics.append
    )
    evals = [(m.step, m.eval_loss) for m in metrics if m.eval_loss is not None]
    periodic = evals[1:-1]  # between the evaluations before and after training
    best_step, best_loss = min(periodic, key=lambda e: e[1] or 0.0)
    assert result.steps == periodic[-1][0] < 6  # stopped early
    assert best_step < result.steps
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert kept == [f"checkpoint-{best_step}"]
    assert result.eval_loss_after == pytest.approx(best_loss)
    saved = load_file(Path(result.adapter_dir) / "adapter_model.safetensors")
    best = load_file(tmp_path / "checkpoints" / kept[0] / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all(torch.equal(saved[k], best[k]) for k in saved)


def test_the_dpo_option_group_reaches_trl(tmp_path: Path) -> None:
    from trl import DPOConfig

    from largeforge.adapters.system.device import DeviceInfo
    from largeforge.adapters.trl.dpo import dpo_arguments
    from largeforge.domain.training import DpoOptions

    options = DpoOptions(beta=0.3, loss_type="ipo", precompute_ref_log_probs=True)
    plan = tiny_plan(method="dpo", dpo=options)
    config = DPOConfig(**dpo_arguments(plan, DeviceInfo("cpu", "cpu", "float32"), tmp_path))
    assert (config.beta, config.loss_type, config.precompute_ref_log_probs) == (0.3, ["ipo"], True)


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_tool_use_rows_train_with_lora_and_full(
    adapter: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Bundled tool-use conversations, masked by the real encoder (calls trained, results and
    the tools block not), train both ways and lower the held-out loss."""
    from largeforge.adapters.data.sources import FileRowSource
    from largeforge.application.data import PrepareDataset

    encoder = HfEncoderFactory().for_model(str(tiny_model_dir))
    prepared = PrepareDataset(FileRowSource()).execute(
        DatasetSpec("sample-tools", count=16), encoder=encoder, max_length=1100
    )
    examples = [e for e in prepared.encoded[:16] if e is not None]
    assert len(examples) == 16
    trained_text = encoder.tokenizer.decode(
        [t for e in examples for t, keep in zip(e.input_ids, e.trainable, strict=True) if keep]
    )
    assert "<tool_call>" in trained_text
    assert "<tool_response>" not in trained_text
    assert "<tools>" not in trained_text
    plan = tiny_plan(
        adapter=adapter,
        lora=LoraSpec(rank=4, alpha=8) if adapter == "lora" else LoraSpec(),
        max_steps=3,
        learning_rate=5e-3 if adapter == "lora" else 1e-3,
        max_length=1100,
    )
    result = TrlSftTrainer(device="cpu").train(
        plan, str(tiny_model_dir), examples[:12], examples[12:], str(tmp_path), lambda m: None
    )
    assert result.eval_loss_after < result.eval_loss_before
