"""Settings of the expert router (the YAML file of `largeforge route ...`), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from largeforge.config import _Strict, read_yaml_mapping, validate_settings
from largeforge.domain.affinity import AffinityPolicy
from largeforge.domain.cascade import (
    DEFAULT_JUDGE_PROMPT,
    Cascade,
    CascadeCheck,
    CascadeStep,
    CheckKind,
    Exhausted,
    check_cascades,
)
from largeforge.domain.circuit_breaker import BreakerPolicy
from largeforge.domain.errors import ConfigError
from largeforge.domain.routing import Expert, ExpertCost, ReplicaSpec, RouteOn, RoutingPolicy


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


class CostSettings(_Strict):
    """What an expert costs per 1000 tokens (any currency; used for cascades and `route eval`)."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class ExpertSettings(_Strict):
    name: str
    description: str = ""
    keywords: dict[str, float] = Field(default_factory=dict)
    examples: list[str] = Field(default_factory=list)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    weight: float = Field(1.0, gt=0)
    replicas: list[ReplicaSettings] = Field(default_factory=list)
    cost: CostSettings = Field(default_factory=CostSettings)


class CheckSettings(_Strict):
    """One check of a cascade step's answer (see `largeforge.domain.cascade`)."""

    kind: Literal["logprob", "json_schema", "tool_call", "regex", "judge"]
    mean: float | None = Field(None, le=0, description="logprob: the mean must reach this")
    min: float | None = Field(None, le=0, description="logprob: every token must reach this")
    pattern: str = Field("", description="regex: searched in the answer")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="json_schema: when the request asks for none"
    )
    judge: str = Field("", description="judge: the expert that gives the verdict")
    prompt: str = DEFAULT_JUDGE_PROMPT
    passes: str = Field(r"^\W*yes\b", description="judge: a verdict matching this passes")

    def check(self) -> CascadeCheck:
        return CascadeCheck(
            kind=CheckKind(self.kind),
            mean=self.mean,
            min=self.min,
            pattern=self.pattern,
            schema=self.schema_,
            judge=self.judge,
            prompt=self.prompt,
            passes=self.passes,
        )


class StepSettings(_Strict):
    expert: str = Field(description="an expert, or the router's name for the routed expert")
    checks: list[CheckSettings] = Field(default_factory=list)


class CascadeSettings(_Strict):
    """A model id whose requests go to the steps in order until an answer passes its checks."""

    name: str
    steps: list[StepSettings] = Field(min_length=1)
    on_exhausted: Literal["error", "last"] = "error"

    def cascade(self) -> Cascade:
        steps = tuple(CascadeStep(s.expert, tuple(c.check() for c in s.checks)) for s in self.steps)
        return Cascade(self.name, steps, Exhausted(self.on_exhausted))


class AffinitySettings(_Strict):
    """Session affinity: the session key is the `user` field, or the header when it is sent."""

    enabled: bool = False
    header: str = "x-session-id"
    use_user_field: bool = True
    ttl_s: float = Field(3600.0, gt=0)
    max_sessions: int = Field(100_000, ge=1)

    def policy(self) -> AffinityPolicy:
        return AffinityPolicy(self.ttl_s, self.max_sessions)


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
    affinity: AffinitySettings = Field(default_factory=AffinitySettings)
    experts: list[ExpertSettings] = Field(min_length=1)
    cascades: list[CascadeSettings] = Field(default_factory=list)

    def cascade_list(self) -> list[Cascade]:
        """The cascades (each check validated: a `ConfigError` names the cascade)."""
        result = []
        for i, c in enumerate(self.cascades):
            try:
                result.append(c.cascade())
            except ConfigError as exc:
                raise ConfigError(f"cascades[{i}] ({c.name}): {exc}") from None
        return result

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
            cost=ExpertCost(e.cost.prompt, e.cost.completion),
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
        check_cascades(settings.cascade_list(), [e.name for e in settings.experts], settings.name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings
