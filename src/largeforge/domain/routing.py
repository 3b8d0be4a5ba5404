"""Experts and the routing policy: who can answer what, and how a query's route is decided."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from largeforge.domain.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RouteStage(StrEnum):
    """Which stage of the policy decided a route."""

    EXPLICIT = "explicit"  # the client named the expert itself
    KEYWORD = "keyword"
    EMBEDDING = "embedding"
    FUSION = "fusion"
    DEFAULT = "default"  # nothing passed its threshold: the default expert


class RouteOn(StrEnum):
    """Which text of a chat is classified."""

    LAST_USER = "last_user"
    CONVERSATION = "conversation"


@dataclass(frozen=True)
class ReplicaSpec:
    """Where one copy of an expert runs: a remote OpenAI-compatible URL or a local model."""

    name: str
    url: str | None = None
    local: str | None = None
    model: str | None = None  # the model id to ask the replica for (default: its first model)
    weight: float = 1.0
    api_key: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.local is None):
            raise ConfigError(f"replica '{self.name}': give exactly one of 'url' or 'local'")
        if self.weight <= 0:
            raise ConfigError(f"replica '{self.name}': weight must be > 0, got {self.weight}")


@dataclass(frozen=True)
class ExpertCost:
    """What an expert costs per 1000 prompt and completion tokens (any currency)."""

    prompt: float = 0.0
    completion: float = 0.0

    def of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1000.0


@dataclass(frozen=True)
class Expert:
    """A specialised model: what it is for, the words and examples that point to it."""

    name: str
    description: str = ""
    keywords: Mapping[str, float] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    replicas: tuple[ReplicaSpec, ...] = ()
    threshold: float | None = None  # embedding similarity needed to route here
    weight: float = 1.0  # multiplies the expert's scores (a prior)
    cost: ExpertCost = ExpertCost()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"expert name '{self.name}' must be letters, digits, '.', '_' or '-'")
        for phrase, weight in self.keywords.items():
            if not phrase.strip():
                raise ConfigError(f"expert '{self.name}': an empty keyword phrase")
            if weight <= 0:
                raise ConfigError(
                    f"expert '{self.name}': keyword '{phrase}' needs a weight > 0, got {weight}"
                )
        if self.weight <= 0:
            raise ConfigError(f"expert '{self.name}': weight must be > 0, got {self.weight}")
        if self.cost.prompt < 0 or self.cost.completion < 0:
            raise ConfigError(f"expert '{self.name}': costs must be >= 0")
        names = [r.name for r in self.replicas]
        if len(set(names)) != len(names):
            raise ConfigError(f"expert '{self.name}': replica names must be unique: {names}")
        object.__setattr__(self, "keywords", MappingProxyType(dict(self.keywords)))


@dataclass(frozen=True)
class RoutingPolicy:
    """The experts, the default for queries nothing claims, and the thresholds of each stage."""

    experts: tuple[Expert, ...]
    default_expert: str
    keyword_threshold: float = 1.0  # summed keyword weight needed to decide at the keyword stage
    embedding_threshold: float = 0.2  # similarity needed, unless the expert sets its own
    route_on: RouteOn = RouteOn.LAST_USER

    def __post_init__(self) -> None:
        names = [e.name for e in self.experts]
        if not names:
            raise ConfigError("a router needs at least one expert")
        if len(set(names)) != len(names):
            raise ConfigError(f"expert names must be unique: {names}")
        if self.default_expert not in names:
            raise ConfigError(
                f"default_expert '{self.default_expert}' is not one of the experts: "
                + ", ".join(names)
            )
        if self.keyword_threshold <= 0:
            raise ConfigError("keyword_threshold must be > 0")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.experts)

    def expert(self, name: str) -> Expert:
        for expert in self.experts:
            if expert.name == name:
                return expert
        raise KeyError(name)

    def threshold(self, name: str) -> float:
        """The embedding similarity an expert needs."""
        own = self.expert(name).threshold
        return self.embedding_threshold if own is None else own

    def with_expert(self, expert: Expert) -> RoutingPolicy:
        """A copy with `expert` added (`ConfigError` if its name is taken)."""
        return replace(self, experts=(*self.experts, expert))

    def without_expert(self, name: str) -> RoutingPolicy:
        """A copy without expert `name` (`ConfigError` for the default expert)."""
        if name == self.default_expert:
            raise ConfigError(f"'{name}' is the default expert: it cannot be removed")
        return replace(self, experts=tuple(e for e in self.experts if e.name != name))

    def with_thresholds(self, thresholds: Mapping[str, float]) -> RoutingPolicy:
        """A copy with per-expert embedding thresholds (from calibration)."""
        experts = tuple(
            replace(e, threshold=thresholds.get(e.name, e.threshold)) for e in self.experts
        )
        return replace(self, experts=experts)


@dataclass(frozen=True)
class RouteDecision:
    """Where a query goes, the score of every expert, which stage decided, and why."""

    expert: str
    stage: RouteStage
    scores: Mapping[str, float]
    reason: str

    def ranked(self) -> list[tuple[str, float]]:
        """(expert, score) from the best score down."""
        return sorted(self.scores.items(), key=lambda item: (-item[1], item[0]))


def best_above(
    scores: Mapping[str, float], thresholds: Mapping[str, float]
) -> tuple[str | None, str]:
    """The highest-scoring expert whose score reaches its threshold, and a reason.

    A tie for the top score is ambiguous and yields no expert: a router never picks at random.
    """
    passing = {n: s for n, s in scores.items() if s >= thresholds[n] and s > 0}
    if not passing:
        top = max(scores.items(), key=lambda item: item[1], default=None)
        if top is None or top[1] <= 0:
            return None, "no expert scored"
        name, score = top
        return None, f"best was {name} at {score:.3f}, below its threshold {thresholds[name]:.3f}"
    ranked = sorted(passing.items(), key=lambda item: -item[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, f"tie between {ranked[0][0]} and {ranked[1][0]} at {ranked[0][1]:.3f}"
    name, score = ranked[0]
    return name, f"{name} scored {score:.3f} (threshold {thresholds[name]:.3f})"


def query_text(messages: Sequence[tuple[str, str]], route_on: RouteOn) -> str:
    """The text to classify from (role, content) pairs: the last user turn or all user turns."""
    user = [content for role, content in messages if role == "user"]
    if not user:
        return ""
    return user[-1] if route_on is RouteOn.LAST_USER else "\n".join(user)
