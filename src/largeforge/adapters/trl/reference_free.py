"""The preference methods without a reference model, over TRL's experimental trainers:
ORPO (`ORPOTrainer`) and SimPO (`CPOTrainer` with the SimPO loss). Both train on the same
prompt/chosen/rejected rows as DPO."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.system.device import DeviceInfo
from largeforge.adapters.trl.arguments import common_arguments
from largeforge.adapters.trl.dpo import pairs, to_preference_row
from largeforge.adapters.trl.method_trainer import TrlMethodTrainer
from largeforge.domain.training import TrainingMethod, TrainingPlan, TrainingUnit


def orpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`ORPOConfig` fields: the common ones and the plan's `orpo` option group."""
    return {**common_arguments(plan, device, work_dir), "beta": plan.orpo.beta}


def simpo_arguments(plan: TrainingPlan, device: DeviceInfo, work_dir: Path) -> dict[str, Any]:
    """`CPOConfig` fields for SimPO: TRL's `simpo_gamma` is the paper's target margin gamma,
    `gamma_beta_ratio * beta`; `cpo_alpha` weighs the chosen answer's SFT loss."""
    options = plan.simpo
    return {
        **common_arguments(plan, device, work_dir),
        "loss_type": "simpo",
        "beta": options.beta,
        "simpo_gamma": options.gamma_beta_ratio * options.beta,
        "cpo_alpha": options.sft_weight,
    }


class TrlReferenceFreeTrainer(TrlMethodTrainer):
    """`ModelTrainer` for `TrainingMethod.ORPO` and `TrainingMethod.SIMPO` over TRL."""

    def __init__(self, method: TrainingMethod, device: str = "auto") -> None:
        if method not in (TrainingMethod.ORPO, TrainingMethod.SIMPO):
            raise ValueError(f"{method} is not a reference-free preference method")
        super().__init__(device)
        self._method = method

    def rows(self, units: Sequence[TrainingUnit], tokenizer: Any) -> list[dict[str, Any]]:
        return [to_preference_row(p) for p in pairs(units)]

    def parts(
        self, plan: TrainingPlan, device: DeviceInfo, work_dir: Path, tokenizer: Any
    ) -> tuple[type, Any, dict[str, Any]]:
        # TRL warns on every import from `trl.experimental`; the docs say these two are.
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        if self._method is TrainingMethod.ORPO:
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            return ORPOTrainer, ORPOConfig(**orpo_arguments(plan, device, work_dir)), {}
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer, CPOConfig(**simpo_arguments(plan, device, work_dir)), {}
