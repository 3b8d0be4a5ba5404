"""Query classifiers: keyword rules, embedding similarity, and the two combined."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol, runtime_checkable

from largeforge.application.ports import EmbeddingModel, Embeddings
from largeforge.domain.routing import RouteDecision, RouteStage, RoutingPolicy, best_above


@runtime_checkable
class QueryClassifier(Protocol):
    """Decides which expert a query goes to, with every expert's score and a reason."""

    name: str

    def classify(self, query: str) -> RouteDecision: ...


def _default(policy: RoutingPolicy, scores: Mapping[str, float], why: str) -> RouteDecision:
    return RouteDecision(
        policy.default_expert, RouteStage.DEFAULT, dict(scores), f"default expert: {why}"
    )


class KeywordClassifier:
    """Case-folded, whole-word phrase matching; an expert's score is the summed weight of the
    distinct phrases found (times the expert's weight). Decides at `keyword_threshold`."""

    name = "keyword"

    def __init__(self, policy: RoutingPolicy) -> None:
        self._policy = policy
        self._patterns: dict[str, tuple[re.Pattern[str], dict[str, float]]] = {}
        for expert in policy.experts:
            if not expert.keywords:
                continue
            weights = {_fold(p): w * expert.weight for p, w in expert.keywords.items()}
            alternatives = "|".join(
                r"\s+".join(map(re.escape, phrase.split()))
                for phrase in sorted(weights, key=len, reverse=True)
            )
            pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
            self._patterns[expert.name] = (pattern, weights)

    def scores(self, query: str) -> dict[str, float]:
        """Every expert's keyword score (0 for experts without keywords or matches)."""
        result = dict.fromkeys(self._policy.names, 0.0)
        for name, (pattern, weights) in self._patterns.items():
            found = {" ".join(_fold(m).split()) for m in pattern.findall(query)}
            result[name] = sum(weights[p] for p in found)
        return result

    def matches(self, query: str) -> dict[str, list[str]]:
        """The phrases each expert matched (for explanations)."""
        return {
            name: sorted({" ".join(_fold(m).split()) for m in pattern.findall(query)})
            for name, (pattern, _w) in self._patterns.items()
        }

    def classify(self, query: str) -> RouteDecision:
        scores = self.scores(query)
        thresholds = dict.fromkeys(scores, self._policy.keyword_threshold)
        expert, why = best_above(scores, thresholds)
        if expert is None:
            return _default(self._policy, scores, why)
        return RouteDecision(expert, RouteStage.KEYWORD, scores, f"keywords: {why}")


class NeuralClassifier:
    """Embedding similarity of the query to each expert's example utterances (and description).

    An expert's score is its best-matching example's cosine similarity times its weight; it is
    chosen when that reaches the expert's threshold (calibrated or the policy's default).
    """

    name = "neural"

    def __init__(self, policy: RoutingPolicy, model: EmbeddingModel) -> None:
        self._policy = policy
        self._model = model
        self._owners: list[str] = []
        texts: list[str] = []
        for expert in policy.experts:
            for text in (*expert.examples, expert.description):
                if text.strip():
                    texts.append(text)
                    self._owners.append(expert.name)
        self._index: Embeddings | None = model.embed(texts) if texts else None
        self._weights = {e.name: e.weight for e in policy.experts}

    def scores(self, query: str) -> dict[str, float]:
        result = dict.fromkeys(self._policy.names, 0.0)
        if self._index is None or not query.strip():
            return result
        row = self._model.embed([query]).cosine(self._index)[0]
        for owner, similarity in zip(self._owners, row, strict=True):
            score = similarity * self._weights[owner]
            if score > result[owner]:
                result[owner] = score
        return result

    def classify(self, query: str) -> RouteDecision:
        scores = self.scores(query)
        thresholds = {n: self._policy.threshold(n) for n in scores}
        expert, why = best_above(scores, thresholds)
        if expert is None:
            return _default(self._policy, scores, why)
        return RouteDecision(expert, RouteStage.EMBEDDING, scores, f"embedding: {why}")


class HybridMode(StrEnum):
    CASCADE = "cascade"  # keyword rules decide when they can, embeddings otherwise
    FUSION = "fusion"  # one score: embedding similarity plus a bonus per keyword weight


class HybridClassifier:
    """Keyword rules first, then embeddings (cascade), or both fused into one score."""

    name = "hybrid"

    def __init__(
        self,
        keyword: KeywordClassifier,
        neural: NeuralClassifier,
        policy: RoutingPolicy,
        mode: HybridMode = HybridMode.CASCADE,
        keyword_bonus: float = 0.1,
    ) -> None:
        self._keyword = keyword
        self._neural = neural
        self._policy = policy
        self._mode = mode
        self._bonus = keyword_bonus

    def classify(self, query: str) -> RouteDecision:
        if self._mode is HybridMode.CASCADE:
            decision = self._keyword.classify(query)
            if decision.stage is RouteStage.KEYWORD:
                return decision
            return self._neural.classify(query)
        keyword = self._keyword.scores(query)
        neural = self._neural.scores(query)
        fused = {n: neural[n] + self._bonus * keyword[n] for n in neural}
        thresholds = {n: self._policy.threshold(n) for n in fused}
        expert, why = best_above(fused, thresholds)
        if expert is None:
            return _default(self._policy, fused, why)
        return RouteDecision(expert, RouteStage.FUSION, fused, f"fused score: {why}")


def _fold(text: str) -> str:
    return text.casefold().strip()
