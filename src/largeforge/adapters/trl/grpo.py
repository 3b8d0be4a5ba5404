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


def to_prompt_row(prompt: PromptExample) -> dict[str, Any]:
    """TRL's conversational prompt row, with the reference answer and the row's other columns
    (which reach the reward functions as keywords)."""
    return {
        **dict(prompt.metadata),
        "prompt": [m.as_dict() for m in prompt.prompt],
        "reference": prompt.reference,
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

    def rows(self, units: Sequence[TrainingUnit]) -> list[dict[str, Any]]:
        return [to_prompt_row(p) for p in prompts(units)]

    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path
    ) -> tuple[type, Any, dict[str, Any]]:
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**grpo_arguments(plan, device, work_dir))
        return GRPOTrainer, config, {"reward_funcs": reward_functions(plan.grpo.rewards)}
