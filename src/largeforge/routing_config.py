"""Settings of the expert router (the YAML file of `largeforge route ...`), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from largeforge.config import _Strict, read_yaml_mapping, validate_settings
from largeforge.domain.circuit_breaker import BreakerPolicy
from largeforge.domain.errors import ConfigError
from largeforge.domain.routing import Expert, ReplicaSpec, RouteOn, RoutingPolicy


class ReplicaSettings(_Strict):
    """One replica: `url` of an OpenAI-compatible server, or `local` model served in-process."""

    name: str | None = None
    url: str | None = None
    local: str | None = None
    model: str | None = Field(None, description="model id on the replica (default: its first)")
    weight: float = Field(1.0, gt=0)
    api_key: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ReplicaSettings:
        if (self.url is None) == (self.local is None):
            raise ValueError("give exactly one of 'url' or 'local'")
        return self


class ExpertSettings(_Strict):
    name: str
    description: str = ""
    keywords: dict[str, float] = Field(default_factory=dict)
    examples: list[str] = Field(default_factory=list)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    weight: float = Field(1.0, gt=0)
    replicas: list[ReplicaSettings] = Field(default_factory=list)


class BreakerSettings(_Strict):
    failure_threshold: int = Field(3, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=1)
    min_calls: int = Field(10, ge=1)
    base_backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    half_open_probes: int = Field(1, ge=1)


class RouterSettings(_Strict):
    """The router file: experts with their replicas, the classifier and the balancing strategy."""

    name: str = Field("auto", description="the model id clients send to be routed")
    default_expert: str
    classifier: Literal["keyword", "neural", "hybrid"] = "hybrid"
    hybrid_mode: Literal["cascade", "fusion"] = "cascade"
    strategy: Literal["round_robin", "weighted", "least_outstanding", "p2c"] = "least_outstanding"
    route_on: Literal["last_user", "conversation"] = "last_user"
    keyword_threshold: float = Field(1.0, gt=0)
    embedding_threshold: float = Field(0.2, ge=-1.0, le=1.0)
    embedding_model: str | None = Field(None, description="encoder directory (default: MiniLM)")
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    health_interval_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    max_wait_s: float = Field(5.0, ge=0, description="wait for a breaker to half-open, then 503")
    admin_keys: list[str] = Field(default_factory=list)
    experts: list[ExpertSettings] = Field(min_length=1)

    def policy(self) -> RoutingPolicy:
        """The domain routing policy (validates names, keywords and the default expert)."""
        return RoutingPolicy(
            experts=tuple(self.expert(e) for e in self.experts),
            default_expert=self.default_expert,
            keyword_threshold=self.keyword_threshold,
            embedding_threshold=self.embedding_threshold,
            route_on=RouteOn(self.route_on),
        )

    @staticmethod
    def expert(e: ExpertSettings) -> Expert:
        return Expert(
            name=e.name,
            description=e.description,
            keywords=e.keywords,
            examples=tuple(e.examples),
            replicas=tuple(replica_spec(e.name, i, r) for i, r in enumerate(e.replicas, 1)),
            threshold=e.threshold,
            weight=e.weight,
        )

    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(**self.breaker.model_dump())


def replica_spec(expert: str, index: int, r: ReplicaSettings) -> ReplicaSpec:
    return ReplicaSpec(
        name=r.name or f"{expert}-{index}",
        url=r.url,
        local=r.local,
        model=r.model,
        weight=r.weight,
        api_key=r.api_key,
    )


def load_router_settings(path: str | Path) -> RouterSettings:
    """Read and validate a router file; `ConfigError` names the file and the key."""
    data = read_yaml_mapping(path, "router config")
    settings = validate_settings(RouterSettings, data, str(path))
    try:
        settings.policy()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings
