"""Group relative policy optimisation with TRL's `GRPOTrainer` and verifiable rewards.

Each prompt is answered `grpo.num_generations` times by the policy (TRL's generation with the
adapter in place); each completion is scored by the run's rewards (`grpo_rewards`), and its
advantage is its weighted reward against its group's. With `grpo.beta` 0 no reference model
is kept; with LoRA the reference is the base model with the adapter disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.hf.prompts import TokenizerCodec
from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.grpo_rewards import check_rewards, reward_functions
from largeforge.adapters.trl.method_trainer import TrlMethodTrainer
from largeforge.domain.datasets import PromptExample
from largeforge.domain.errors import TrainingError
from largeforge.domain.training import TrainingPlan, TrainingUnit


def prompts(units: Sequence[TrainingUnit]) -> list[PromptExample]:
    """The units as prompts; a `TrainingError` if any is not one."""
    wrong = [u for u in units if not isinstance(u, PromptExample)]
    if wrong:
        raise TrainingError(f"GRPO trains on prompts, got {type(wrong[0]).__name__}")
    return [u for u in units if isinstance(u, PromptExample)]


class PromptRenderer(TokenizerCodec):
    """Prompts rendered as `serve` renders a request: with its tools through the chat template
    (or the hermes fallback block, for a template that ignores `tools=`)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer


def to_prompt_row(prompt: PromptExample, renderer: PromptRenderer | None = None) -> dict[str, Any]:
    """TRL's prompt row: conversational, or with a `renderer` the rendered text (rows with tools
    are rendered by LargeForge: TRL's own rendering takes one tool list for every row). With the
    reference answer, the names of the prompt's tools and the row's other columns, which reach
    the reward functions as keywords."""
    text = renderer.chat_text(prompt.prompt, prompt.tools) if renderer is not None else None
    return {
        **dict(prompt.metadata),
        "prompt": text if text is not None else [m.as_dict() for m in prompt.prompt],
        "reference": prompt.reference,
        "tool_names": [t.name for t in prompt.tools],
    }


def eval_batch_size(plan: TrainingPlan) -> int:
    """Completions per eval batch: whole groups, at least 8 completions."""
    groups = max(1, -(-max(plan.batch_size, 8) // plan.grpo.num_generations))
    return groups * plan.grpo.num_generations


def grpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`GRPOConfig` fields: the common ones (GRPO bounds completions, not whole rows) and the
    plan's `grpo` option group."""
    options = plan.grpo
    common = common_arguments(plan, device, work_dir)
    common.pop("max_length")
    return {
        **common,
        "per_device_eval_batch_size": eval_batch_size(plan),
        "num_generations": options.num_generations,
        "max_completion_length": options.max_completion_length,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "beta": options.beta,
        "epsilon": options.epsilon,
        "loss_type": options.loss_type,
        "scale_rewards": options.scale_rewards,
        "reward_weights": [spec.weight for spec in options.rewards],
        "log_completions": False,
    }


class TrlGrpoTrainer(TrlMethodTrainer):
    """`ModelTrainer` for `TrainingMethod.GRPO` over TRL (options from the plan's `grpo` group)."""

    def check_plan(self, plan: TrainingPlan) -> None:
        """Import and check the user's reward functions before data or model loads."""
        check_rewards(plan.grpo.rewards)

    def rows(self, units: Sequence[TrainingUnit], tokenizer: Any) -> list[dict[str, Any]]:
        """Conversational rows, or rendered text for every row when any prompt offers tools
        (a dataset is one or the other)."""
        items = prompts(units)
        renderer = PromptRenderer(tokenizer) if any(p.tools for p in items) else None
        return [to_prompt_row(p, renderer) for p in items]

    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path, tokenizer: Any
    ) -> tuple[type, Any, dict[str, Any]]:
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**grpo_arguments(plan, device, work_dir))
        tool_format = PromptRenderer(tokenizer).tool_format
        rewards = reward_functions(plan.grpo.rewards, tool_format=tool_format)
        return GRPOTrainer, config, {"reward_funcs": rewards}
