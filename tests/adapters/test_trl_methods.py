"""KTO, ORPO, SimPO and GRPO through their trainer adapters, on the tiny random model: each
trains, writes an adapter, and records its own metrics; each option group reaches TRL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from largeforge.adapters.system.device import DeviceInfo
from largeforge.domain import Message, Role, StepMetrics
from largeforge.domain.datasets import LabeledCompletion, PreferencePair, PromptExample
from largeforge.domain.method_options import GrpoOptions, KtoOptions, OrpoOptions, SimpoOptions
from largeforge.domain.rewards import reward_spec
from largeforge.domain.training import TrainingMethod
from tests.adapters.test_trl_training import tiny_plan

CPU = DeviceInfo("cpu", "cpu", "float32")


def user(text: str) -> tuple[Message, ...]:
    return (Message(Role.USER, text),)


def assistant(text: str) -> tuple[Message, ...]:
    return (Message(Role.ASSISTANT, text),)


def parity_pairs(n: int = 16) -> list[PreferencePair]:
    return [
        PreferencePair(
            user(f"Is {i} even?"),
            assistant("yes" if i % 2 == 0 else "no"),
            assistant("banana banana"),
            source=f"pairs:{i + 1}",
        )
        for i in range(n)
    ]


def adapter_delta(adapter_dir: str) -> float:
    """The largest |B| of the LoRA weights: 0 at initialisation, so > 0 once trained."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    return max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_reference_free_methods_widen_the_reward_margin(
    method: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from largeforge.adapters.trl.reference_free import TrlReferenceFreeTrainer

    pairs = parity_pairs()
    plan = tiny_plan(method=method, max_steps=6, logging_steps=2)
    metrics: list[StepMetrics] = []
    result = TrlReferenceFreeTrainer(TrainingMethod(method), "cpu").train(
        plan, str(tiny_model_dir), pairs[:12], pairs[12:], str(tmp_path), metrics.append
    )
    assert result.steps == 6
    assert result.eval_reward_margin_before is not None
    assert result.eval_reward_margin_after is not None
    assert result.eval_reward_margin_after > result.eval_reward_margin_before
    assert result.eval_loss_after < result.eval_loss_before
    assert adapter_delta(result.adapter_dir) > 0
    logged = [m for m in metrics if m.loss is not None]
    assert [m.step for m in logged] == [1, 2, 4, 6]
    assert all(m.reward_margin is not None and m.reward_accuracy is not None for m in logged)


def test_kto_trains_on_labelled_completions_and_records_kl_and_margins(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from largeforge.adapters.trl.kto import TrlKtoTrainer

    units = [c for p in parity_pairs() for c in LabeledCompletion.from_pair(p)]
    plan = tiny_plan(method="kto", max_steps=6, logging_steps=2)
    metrics: list[StepMetrics] = []
    result = TrlKtoTrainer("cpu").train(
        plan, str(tiny_model_dir), units[:24], units[24:], str(tmp_path), metrics.append
    )
    assert result.steps == 6
    assert (result.train_examples, result.eval_examples) == (24, 8)
    assert result.eval_reward_margin_before == pytest.approx(0.0, abs=1e-4)
    assert result.eval_reward_margin_after is not None
    assert result.eval_reward_margin_after > 0
    assert adapter_delta(result.adapter_dir) > 0
    logged = [m for m in metrics if m.loss is not None]
    assert [m.step for m in logged] == [1, 2, 4, 6]
    assert all(m.kl is not None and m.reward_margin is not None for m in logged)


REWARDS_MODULE = """
import json, os

def count_e(completions, prompts, reference, **columns):
    with open(os.environ["LF_REWARD_LOG"], "a") as log:
        log.write(json.dumps({"completions": completions, "reference": reference,
                              "columns": sorted(columns), "kind": columns.get("kind"),
                              "prompt": prompts[0]}) + "\\n")
    return [c.count("e") / max(1, len(c)) for c in completions]
"""


def test_grpo_scores_generations_with_builtin_and_user_rewards(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from largeforge.adapters.trl.grpo import TrlGrpoTrainer

    (tmp_path / "lf_test_rewards.py").write_text(REWARDS_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LF_REWARD_LOG", str(tmp_path / "calls.jsonl"))
    prompts = [
        PromptExample(user(f"What is {i} + 1?"), str(i + 1), (("kind", "sum"),)) for i in range(12)
    ]
    rewards = (
        reward_spec({"kind": "python", "function": "lf_test_rewards:count_e"}),
        reward_spec({"kind": "length_penalty", "max_chars": 10, "weight": 0.5}),
    )
    options = GrpoOptions(rewards=rewards, num_generations=4, max_completion_length=8)
    plan = tiny_plan(method="grpo", grpo=options, max_steps=3, logging_steps=1)
    metrics: list[StepMetrics] = []
    trainer = TrlGrpoTrainer("cpu")
    trainer.check_plan(plan)
    result = trainer.train(
        plan, str(tiny_model_dir), prompts[:8], prompts[8:], str(tmp_path / "run"), metrics.append
    )
    assert result.steps == 3
    assert result.eval_reward_before is not None
    assert result.eval_reward_after is not None
    assert adapter_delta(result.adapter_dir) > 0
    logged = [m for m in metrics if m.loss is not None]
    assert [m.step for m in logged] == [1, 2, 3]
    for m in logged:
        assert m.reward is not None
        assert m.reward_std is not None
        each = dict(m.rewards)
        assert set(each) == {"count_e", "length_penalty"}
        # The logged reward is the weighted sum of the functions' means.
        assert m.reward == pytest.approx(each["count_e"] + 0.5 * each["length_penalty"], abs=1e-4)
    evals = [m for m in metrics if m.eval_reward is not None]
    assert [m.step for m in evals] == [0, 3]
    assert all(dict(m.eval_rewards).keys() == {"count_e", "length_penalty"} for m in evals)
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls, "the user's reward was never called"
    for call in calls:
        assert all(isinstance(c, str) for c in call["completions"])
        assert len(call["reference"]) == len(call["completions"])
        assert call["kind"] == ["sum"] * len(call["completions"])
        assert call["prompt"][-1]["role"] == "user"
    # Every completion of a training step is one of 4 of its prompt's group.
    assert any(len(call["completions"]) == plan.batch_size for call in calls)
    references = {r for call in calls for r in call["reference"]}
    assert references <= {str(i + 1) for i in range(12)}


def test_the_option_groups_reach_trl(tmp_path: Path) -> None:
    from trl import GRPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    from largeforge.adapters.trl.grpo import grpo_arguments
    from largeforge.adapters.trl.kto import kto_arguments
    from largeforge.adapters.trl.reference_free import orpo_arguments, simpo_arguments

    kto = KTOConfig(
        **kto_arguments(
            tiny_plan(method="kto", kto=KtoOptions(0.2, "apo_zero_unpaired", 1.5, 0.5)),
            CPU,
            tmp_path,
        )
    )
    assert (kto.beta, kto.loss_type, kto.desirable_weight, kto.undesirable_weight) == (
        0.2,
        "apo_zero_unpaired",
        1.5,
        0.5,
    )
    orpo = ORPOConfig(
        **orpo_arguments(tiny_plan(method="orpo", orpo=OrpoOptions(0.25)), CPU, tmp_path)
    )
    assert orpo.beta == 0.25
    simpo_plan = tiny_plan(method="simpo", simpo=SimpoOptions(2.5, 0.4, 0.1))
    simpo = CPOConfig(**simpo_arguments(simpo_plan, CPU, tmp_path))
    assert (simpo.loss_type, simpo.beta, simpo.cpo_alpha) == ("simpo", 2.5, 0.1)
    assert simpo.simpo_gamma == pytest.approx(1.0)  # the paper's gamma: 0.4 x 2.5
    rewards = (reward_spec({"kind": "numeric_answer", "weight": 2.0}),)
    options = GrpoOptions(rewards, 8, 48, 0.7, 0.9, 0.04, 0.3, "grpo", "batch")
    grpo_plan = tiny_plan(method="grpo", grpo=options, batch_size=8)
    grpo: Any = GRPOConfig(**grpo_arguments(grpo_plan, CPU, tmp_path))
    got = (
        grpo.num_generations,
        grpo.max_completion_length,
        grpo.temperature,
        grpo.top_p,
        grpo.beta,
        grpo.epsilon,
        grpo.loss_type,
        grpo.scale_rewards,
        grpo.reward_weights,
    )
    assert got == (8, 48, 0.7, 0.9, 0.04, 0.3, "grpo", "batch", [2.0])
    assert grpo.per_device_eval_batch_size % 8 == 0


def test_grpo_renders_prompts_with_their_tools_and_scores_calls(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A prompt that offers tools is rendered as `serve` renders it (SmolLM2's template ignores
    `tools=`: the hermes block in the system prompt), and the `tool_call` reward scores the
    answers in that format."""
    from transformers import AutoTokenizer

    from largeforge.adapters.hf.prompts import TokenizerCodec
    from largeforge.adapters.trl.grpo import PromptRenderer, TrlGrpoTrainer
    from largeforge.domain.tools import ToolSpec

    tool = ToolSpec("get_time", "The time in a city", {"type": "object", "properties": {}})
    prompts = [
        PromptExample(
            user(f"Time in city {i}?"), '[{"name": "get_time", "arguments": {}}]', tools=(tool,)
        )
        for i in range(6)
    ] + [PromptExample(user("Say hi"), "[]")] * 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = TrlGrpoTrainer("cpu")
    rows = trainer.rows(prompts, tokenizer)
    assert isinstance(PromptRenderer(tokenizer), TokenizerCodec)
    assert all(isinstance(r["prompt"], str) for r in rows)  # one kind of row per dataset
    assert '"name": "get_time"' in rows[0]["prompt"]
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert rows[0]["tool_names"] == ["get_time"]
    assert "get_time" not in rows[-1]["prompt"]
    assert rows[-1]["tool_names"] == []
    options = GrpoOptions(
        rewards=(reward_spec({"kind": "tool_call"}),), num_generations=4, max_completion_length=8
    )
    plan = tiny_plan(method="grpo", grpo=options, max_steps=2, logging_steps=1, val_size=0.0)
    metrics: list[StepMetrics] = []
    result = trainer.train(plan, str(tiny_model_dir), prompts, [], str(tmp_path), metrics.append)
    assert result.steps == 2
    logged = [m for m in metrics if m.loss is not None]
    # A step is one prompt's 4 answers, and a random model makes no call: 0.0 where a call
    # was due, 1.0 where none was.
    assert all(dict(m.rewards).keys() == {"tool_call"} for m in logged)
    assert all(dict(m.rewards)["tool_call"] in (0.0, 1.0) for m in logged)
