"""Keyword, neural and hybrid classifiers, evaluation and calibration (fake embeddings)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.application.classifiers import (
    HybridClassifier,
    HybridMode,
    KeywordClassifier,
    NeuralClassifier,
)
from largeforge.application.route_evaluation import (
    LabelledQuery,
    calibrate_thresholds,
    evaluate,
)
from largeforge.domain.errors import ConfigError
from largeforge.domain.routing import (
    Expert,
    RouteOn,
    RouteStage,
    RoutingPolicy,
    best_above,
    query_text,
)
from tests.router_fakes import FakeEmbeddingModel

CODE = Expert(
    "code",
    keywords={"python": 1.0, "stack trace": 2.0, "bug": 0.5},
    examples=("fix my python bug", "why does my program crash", "loop never ends program hangs"),
)
MATH = Expert(
    "math",
    keywords={"integral": 2.0, "equation": 1.0},
    examples=("solve this equation for x", "what are the odds of rolling dice"),
)
GENERAL = Expert("general", description="small talk")


def policy(**kw: object) -> RoutingPolicy:
    return RoutingPolicy((CODE, MATH, GENERAL), "general", **kw)  # type: ignore[arg-type]


def test_keyword_matching_is_case_folded_whole_word_and_phrase_aware() -> None:
    keyword = KeywordClassifier(policy())
    assert keyword.scores("PYTHON crashed with a Stack   Trace")["code"] == 3.0
    assert keyword.scores("pythonic code")["code"] == 0.0  # not a whole word
    assert keyword.scores("python python python")["code"] == 1.0  # each phrase counts once
    assert keyword.matches("a bug in python")["code"] == ["bug", "python"]


def test_keyword_decides_at_its_threshold_and_abstains_to_the_default() -> None:
    keyword = KeywordClassifier(policy())
    decided = keyword.classify("compute the integral")
    assert (decided.expert, decided.stage) == ("math", RouteStage.KEYWORD)
    weak = keyword.classify("a small bug")  # 0.5 < threshold 1.0
    assert (weak.expert, weak.stage) == ("general", RouteStage.DEFAULT)
    assert "below its threshold" in weak.reason


def test_a_tie_goes_to_the_default_never_to_a_random_expert() -> None:
    decision = KeywordClassifier(policy()).classify("python equation")  # 1.0 vs 1.0
    assert decision.expert == "general"
    assert "tie" in decision.reason


def test_neural_scores_by_the_best_matching_example() -> None:
    neural = NeuralClassifier(policy(), FakeEmbeddingModel())
    decision = neural.classify("my program hangs in a loop that never ends")
    assert (decision.expert, decision.stage) == ("code", RouteStage.EMBEDDING)
    assert decision.scores["code"] > decision.scores["math"]
    unrelated = neural.classify("zzz qqq")
    assert unrelated.expert == "general"
    assert unrelated.stage is RouteStage.DEFAULT


def test_per_expert_thresholds_and_weights_apply() -> None:
    strict = policy().with_thresholds({"code": 0.99})
    neural = NeuralClassifier(strict, FakeEmbeddingModel())
    assert neural.classify("my program hangs in a loop that never ends").expert == "general"


def test_hybrid_cascade_uses_keywords_first_then_embeddings() -> None:
    pol = policy()
    hybrid = HybridClassifier(
        KeywordClassifier(pol), NeuralClassifier(pol, FakeEmbeddingModel()), pol
    )
    assert hybrid.classify("integral of x").stage is RouteStage.KEYWORD
    by_embedding = hybrid.classify("what are the odds of rolling two dice")
    assert (by_embedding.expert, by_embedding.stage) == ("math", RouteStage.EMBEDDING)


def test_hybrid_fusion_adds_a_keyword_bonus() -> None:
    pol = policy()
    neural = NeuralClassifier(pol, FakeEmbeddingModel())
    fusion = HybridClassifier(KeywordClassifier(pol), neural, pol, HybridMode.FUSION, 0.1)
    query = "python odds"
    fused = fusion.classify(query)
    assert fused.scores["code"] == pytest.approx(neural.scores(query)["code"] + 0.1)


@given(st.dictionaries(st.sampled_from("abcd"), st.floats(-1, 3), min_size=1))
def test_best_above_never_picks_below_threshold_or_a_tie(scores: dict[str, float]) -> None:
    thresholds = dict.fromkeys(scores, 0.5)
    name, _why = best_above(scores, thresholds)
    if name is not None:
        assert scores[name] >= 0.5
        assert all(s < scores[name] for n, s in scores.items() if n != name)


def test_query_text_takes_the_last_user_turn_or_all_of_them() -> None:
    chat = [("system", "be nice"), ("user", "first"), ("assistant", "ok"), ("user", "second")]
    assert query_text(chat, RouteOn.LAST_USER) == "second"
    assert query_text(chat, RouteOn.CONVERSATION) == "first\nsecond"


def test_policy_validation_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="default_expert 'nope'"):
        RoutingPolicy((CODE,), "nope")
    with pytest.raises(ConfigError, match="unique"):
        RoutingPolicy((CODE, CODE), "code")
    with pytest.raises(ConfigError, match="keyword 'x' needs a weight > 0"):
        Expert("e", keywords={"x": 0})
    with pytest.raises(ConfigError, match="expert name"):
        Expert("has space")


LABELLED = [
    LabelledQuery("fix the python bug", "code"),
    LabelledQuery("my program hangs in a loop", "code"),
    LabelledQuery("solve the equation", "math"),
    LabelledQuery("odds of rolling dice", "math"),
    LabelledQuery("hello there friend", "general"),
]


def test_evaluate_counts_accuracy_confusion_and_default_share() -> None:
    pol = policy()
    result = evaluate(KeywordClassifier(pol), pol, LABELLED)
    assert result.total == 5
    assert result.correct == 3  # python bug, equation, and the general query by abstention
    assert result.confusion["code"]["general"] == 1
    assert result.per_expert["math"].precision == 1.0
    assert result.per_expert["math"].recall == 0.5
    assert result.default_share == pytest.approx(3 / 5)
    with pytest.raises(ConfigError, match="not an expert"):
        evaluate(KeywordClassifier(pol), pol, [LabelledQuery("x", "chef")])


def test_calibration_never_lowers_accuracy_and_keeps_off_topic_queries_out() -> None:
    pol = policy(embedding_threshold=0.9)
    neural = NeuralClassifier(pol, FakeEmbeddingModel())
    before = evaluate(neural, pol, LABELLED).correct
    thresholds = calibrate_thresholds(neural.scores, pol, LABELLED)
    assert set(thresholds) == {"code", "math"}
    calibrated = pol.with_thresholds(thresholds)
    after = evaluate(NeuralClassifier(calibrated, FakeEmbeddingModel()), calibrated, LABELLED)
    assert after.correct >= before
    assert after.correct == len(LABELLED)
