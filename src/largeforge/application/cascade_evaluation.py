"""`route eval --cascade`: a cascade against always-smallest and always-largest on labelled
requests with reference answers: accuracy, the share answered at each step, and cost.

The cascade's own run gives every step's answer it reached; the first step's is the
always-smallest answer and the last step's, when the cascade got there, the always-largest
one, so each row costs one extra request at most (the last step, when the cascade stopped
earlier). Answers are sampled as the row asks (temperature 0 unless it says otherwise), so
the step answers the strategies share are the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from largeforge.application.cascade import CascadeService
from largeforge.domain.cascade import Cascade, StepOutcome, answers_of, requested_schema
from largeforge.domain.errors import CascadeExhaustedError
from largeforge.domain.eval_matching import MatchKind, match_text


@dataclass(frozen=True)
class CascadeCase:
    """One labelled request: the chat body (without `model`) and its reference answer."""

    body: Mapping[str, Any]
    reference: str
    match: MatchKind = MatchKind.EXACT
    ignore_case: bool = False
    line: int = 0

    def correct(self, payload: Mapping[str, Any] | None) -> bool:
        if payload is None:
            return False
        answers = answers_of(payload)
        if not answers:
            return False
        schema = requested_schema(self.body) if self.match is MatchKind.JSON_SCHEMA else None
        return match_text(
            answers[0].content, self.match, self.reference, schema=schema,
            ignore_case=self.ignore_case,
        ).matched  # fmt: skip


@dataclass
class StrategyScore:
    """How one strategy did: correct answers, rows, cost, and for the cascade the rows
    answered at each step (`by_step[0]`: no step answered)."""

    name: str
    rows: int = 0
    correct: int = 0
    cost: float = 0.0
    by_step: list[int] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else 0.0

    def shares(self) -> list[float]:
        """The share of rows answered at each step (1-based positions; [0] unanswered)."""
        return [n / self.rows if self.rows else 0.0 for n in self.by_step]


@dataclass(frozen=True)
class CaseResult:
    """One row: the step that answered it (0: none) and whether each strategy was right."""

    line: int
    step: int
    cascade: bool
    smallest: bool
    largest: bool


@dataclass(frozen=True)
class CascadeEvaluation:
    cascade: str
    steps: tuple[str, ...]
    cascade_score: StrategyScore
    smallest: StrategyScore
    largest: StrategyScore
    cases: tuple[CaseResult, ...] = ()

    @property
    def strategies(self) -> tuple[StrategyScore, ...]:
        return (self.cascade_score, self.smallest, self.largest)


async def evaluate_cascade(
    service: CascadeService,
    cascade: Cascade,
    cases: Sequence[CascadeCase],
    progress: Callable[[], None] | None = None,
) -> CascadeEvaluation:
    """Run every case through the cascade and score the three strategies."""
    last = len(cascade.steps)
    scores = (
        StrategyScore("cascade", by_step=[0] * (last + 1)),
        StrategyScore("always-smallest"),
        StrategyScore("always-largest"),
    )
    ran, smallest, largest = scores
    results: list[CaseResult] = []
    for case in cases:
        body = {**case.body, "model": cascade.name, "stream": False}
        seen: dict[int, tuple[dict[str, Any], float]] = {}

        def on_step(outcome: StepOutcome, payload: dict[str, Any]) -> None:
            # the answer's own cost (a judge's is the cascade's, not a lone step's)
            own = service.cost(outcome.expert, payload.get("usage"))
            seen[outcome.step] = (payload, own)  # noqa: B023 - called before the loop moves on

        messages = [(str(m.get("role")), str(m.get("content") or "")) for m in body["messages"]]
        answer: dict[str, Any] | None
        try:
            reply = await service.run(cascade, body, messages, on_step=on_step)
            answer, step, cost = reply.payload, reply.step, reply.trace.cost
            if not reply.trace.answered:  # on_exhausted: last
                step = 0
        except CascadeExhaustedError as exc:
            answer, step, cost = None, 0, exc.cost
        right = [case.correct(answer)]
        _score(ran, right[0], cost)
        ran.by_step[step] += 1
        for score, number in ((smallest, 1), (largest, last)):
            if number not in seen:
                seen[number] = await service.answer_at(cascade, number, body, messages)
            payload, spent = seen[number]
            right.append(case.correct(payload))
            _score(score, right[-1], spent)
        results.append(CaseResult(case.line, step, *right))
        if progress is not None:
            progress()
    steps = tuple(s.target for s in cascade.steps)
    return CascadeEvaluation(cascade.name, steps, *scores, cases=tuple(results))


def _score(score: StrategyScore, correct: bool, cost: float) -> None:
    score.rows += 1
    score.correct += correct
    score.cost += cost
