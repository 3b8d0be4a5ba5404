"""The option groups of the preference and reinforcement methods: `kto:`, `orpo:`, `simpo:` and
`grpo:` in a run file. Each is read only by its own method; a bad value raises `ValueError`
whose message starts with the key (the config layer turns it into a one-line `ConfigError`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from largeforge.domain.rewards import RewardKind, RewardSpec

KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")
GRPO_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")
GRPO_REWARD_SCALING = ("group", "batch", "none")


def _positive(value: float, key: str) -> None:
    if value <= 0:
        raise ValueError(f"{key}: must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class KtoOptions:
    """KTO (Ethayarajh et al., 2024) on unpaired completions labelled desirable or not.

    `desirable_weight` and `undesirable_weight` balance the two labels' losses; the KTO paper
    keeps `desirable_weight * n_desirable / (undesirable_weight * n_undesirable)` in [1, 4/3].
    """

    beta: float = 0.1
    loss_type: str = "kto"
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __post_init__(self) -> None:
        _positive(self.beta, "kto.beta")
        _positive(self.desirable_weight, "kto.desirable_weight")
        _positive(self.undesirable_weight, "kto.undesirable_weight")
        if self.loss_type not in KTO_LOSS_TYPES:
            raise ValueError(
                f"kto.loss_type: must be one of {', '.join(KTO_LOSS_TYPES)}, got {self.loss_type!r}"
            )


@dataclass(frozen=True, slots=True)
class OrpoOptions:
    """ORPO (Hong et al., 2024): the SFT loss on the chosen answer plus `beta` (the paper's
    lambda) times the log odds ratio of chosen over rejected; no reference model."""

    beta: float = 0.1

    def __post_init__(self) -> None:
        _positive(self.beta, "orpo.beta")


@dataclass(frozen=True, slots=True)
class SimpoOptions:
    """SimPO (Meng et al., 2024): length-normalised log-likelihood margins scaled by `beta`,
    with a target margin `gamma_beta_ratio * beta`; no reference model. `sft_weight` adds the
    chosen answer's SFT loss (CPO's alpha; 0 is plain SimPO)."""

    beta: float = 2.0
    gamma_beta_ratio: float = 0.5
    sft_weight: float = 0.0

    def __post_init__(self) -> None:
        _positive(self.beta, "simpo.beta")
        if self.gamma_beta_ratio < 0:
            raise ValueError(
                f"simpo.gamma_beta_ratio: must not be negative, got {self.gamma_beta_ratio}"
            )
        if self.sft_weight < 0:
            raise ValueError(f"simpo.sft_weight: must not be negative, got {self.sft_weight}")


@dataclass(frozen=True, slots=True)
class GrpoOptions:
    """GRPO (Shao et al., 2024): `num_generations` completions per prompt, scored by
    `rewards`, each advantaged against its group's mean. `beta` is the KL coefficient to the
    reference (0: no reference model is kept)."""

    rewards: tuple[RewardSpec, ...] = ()
    num_generations: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: str = "group"

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(
                f"grpo.num_generations: needs at least 2 completions a prompt (advantages are "
                f"relative to the group), got {self.num_generations}"
            )
        if self.max_completion_length < 1:
            raise ValueError(
                f"grpo.max_completion_length: must be positive, got {self.max_completion_length}"
            )
        _positive(self.temperature, "grpo.temperature")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"grpo.top_p: must be in (0, 1], got {self.top_p}")
        if self.beta < 0:
            raise ValueError(f"grpo.beta: must not be negative, got {self.beta}")
        _positive(self.epsilon, "grpo.epsilon")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(
                f"grpo.loss_type: must be one of {', '.join(GRPO_LOSS_TYPES)}, "
                f"got {self.loss_type!r}"
            )
        if self.scale_rewards not in GRPO_REWARD_SCALING:
            raise ValueError(
                f"grpo.scale_rewards: must be one of {', '.join(GRPO_REWARD_SCALING)}, "
                f"got {self.scale_rewards!r}"
            )

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> GrpoOptions:
        """The options as `dataclasses.asdict` wrote them (a run's run.json)."""
        fields = dict(data)
        rewards = tuple(
            RewardSpec(**{**spec, "kind": RewardKind(spec["kind"])})
            for spec in fields.pop("rewards", ())
        )
        return GrpoOptions(rewards=rewards, **fields)
