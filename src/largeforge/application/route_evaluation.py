"""Evaluate classifiers on labelled queries, and calibrate per-expert thresholds from them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from largeforge.application.classifiers import QueryClassifier
from largeforge.domain.errors import ConfigError
from largeforge.domain.routing import RouteStage, RoutingPolicy, best_above


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    expert: str


@dataclass(frozen=True)
class ExpertStats:
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class RouteEvaluation:
    """How one classifier did on a labelled set."""

    classifier: str
    total: int
    correct: int
    to_default: int  # routed to the default expert by abstention
    per_expert: Mapping[str, ExpertStats]
    confusion: Mapping[str, Mapping[str, int]]  # confusion[true][predicted]
    errors: tuple[tuple[str, str, str], ...] = field(default=())  # (query, true, predicted)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def default_share(self) -> float:
        return self.to_default / self.total if self.total else 0.0


def evaluate(
    classifier: QueryClassifier, policy: RoutingPolicy, labelled: Sequence[LabelledQuery]
) -> RouteEvaluation:
    """Route every labelled query and compare with its label."""
    names = list(policy.names)
    confusion = {t: dict.fromkeys(names, 0) for t in names}
    correct = to_default = 0
    errors: list[tuple[str, str, str]] = []
    for item in labelled:
        if item.expert not in confusion:
            raise ConfigError(
                f"label '{item.expert}' is not an expert of this router: {', '.join(names)}"
            )
        decision = classifier.classify(item.query)
        confusion[item.expert][decision.expert] += 1
        to_default += decision.stage is RouteStage.DEFAULT
        if decision.expert == item.expert:
            correct += 1
        else:
            errors.append((item.query, item.expert, decision.expert))
    per_expert = {}
    for name in names:
        predicted = sum(confusion[t][name] for t in names)
        support = sum(confusion[name].values())
        hits = confusion[name][name]
        per_expert[name] = ExpertStats(
            precision=hits / predicted if predicted else 0.0,
            recall=hits / support if support else 0.0,
            support=support,
        )
    return RouteEvaluation(
        classifier.name, len(labelled), correct, to_default, per_expert, confusion, tuple(errors)
    )


def calibrate_thresholds(
    scores: Callable[[str], Mapping[str, float]],
    policy: RoutingPolicy,
    labelled: Sequence[LabelledQuery],
    rounds: int = 3,
) -> dict[str, float]:
    """Per-expert thresholds that maximise routing accuracy on `labelled`.

    Coordinate ascent over the observed scores: each expert's threshold in turn takes the value
    (a midpoint between observed scores) that gives the most correct routes, the others held
    fixed; ties go to the higher threshold, which abstains more. The default expert's queries
    are what keeps thresholds up: without any, thresholds fall as low as the data allows.
    """
    table = [(dict(scores(item.query)), item.expert) for item in labelled]
    names = list(policy.names)
    thresholds = {n: policy.threshold(n) for n in names}

    def accuracy(candidate: dict[str, float]) -> int:
        hits = 0
        for row, label in table:
            expert, _why = best_above(row, candidate)
            hits += (expert or policy.default_expert) == label
        return hits

    for _round in range(rounds):
        changed = False
        for name in names:
            if name == policy.default_expert:
                continue
            observed = sorted({round(row[name], 6) for row, _label in table})
            candidates = [observed[0] - 1e-3] + [
                (a + b) / 2 for a, b in itertools.pairwise(observed)
            ]
            candidates.append(observed[-1] + 1e-3)
            best, best_hits = thresholds[name], accuracy(thresholds)
            for value in candidates:
                hits = accuracy(thresholds | {name: value})
                if hits > best_hits or (hits == best_hits and value > best):
                    best, best_hits = value, hits
            if best != thresholds[name]:
                thresholds[name], changed = best, True
        if not changed:
            break
    return {n: round(v, 4) for n, v in thresholds.items() if n != policy.default_expert}
