"""CascadeService: answer with the cheapest step whose answer passes its checks.

Each step's answer is buffered whole (a streamed one as its chunks), checked, and either sent
or dropped for the next step. A step that cannot answer (no replica, a failure mid-stream) is
escalated past like a failed check; a refusal of the request itself goes to the client as it
is, since every step would refuse it alike. The logprobs and usage the checks and costs need
are asked for and, when the client did not ask for them, taken out again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from largeforge.application.router import Routed, RouterService
from largeforge.domain.cascade import (
    Answer,
    Cascade,
    CascadeCheck,
    CascadeStep,
    CascadeTrace,
    CheckKind,
    Exhausted,
    StepOutcome,
    Verdict,
    answers_of,
    check_answer,
    check_cascades,
)
from largeforge.domain.chat_chunks import assemble_chunks
from largeforge.domain.errors import (
    CascadeExhaustedError,
    NoReplicaAvailableError,
    ReplicaError,
)

log = structlog.get_logger(__name__)
PATH = "/chat/completions"

OnStep = Callable[[StepOutcome, dict[str, Any]], None]
"""Told each step's outcome and answer (a chat completion) as the cascade goes."""


@dataclass(frozen=True)
class CascadeReply:
    """The answer sent (`payload`, and for a streamed request the `chunks` to replay), the
    step that gave it (`routed`) and every step tried (`trace`)."""

    trace: CascadeTrace
    routed: Routed
    payload: dict[str, Any]
    chunks: tuple[dict[str, Any], ...] | None = None
    step: int = 1  # the step whose answer this is (1-based)


@dataclass(frozen=True)
class _StepAnswer:
    routed: Routed
    payload: dict[str, Any]
    chunks: tuple[dict[str, Any], ...] | None
    cost: float
    step: int = 0


class CascadeService:
    """Runs the router's cascades over its `RouterService` (which balances and fails over)."""

    def __init__(
        self,
        router: RouterService,
        cascades: Sequence[Cascade],
    ) -> None:
        self.router = router
        self.cascades = {c.name: c for c in cascades}
        check_cascades(cascades, router.manager.experts, router.name)

    def cost(self, expert: str, usage: Mapping[str, Any] | None) -> float:
        """What `usage` cost on `expert` (0 when it has no cost or no usage came back)."""
        if not usage or expert not in self.router.manager.policy.names:
            return 0.0
        price = self.router.manager.policy.expert(expert).cost
        return price.of(
            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )

    async def run(
        self,
        cascade: Cascade,
        body: Mapping[str, Any],
        messages: Sequence[tuple[str, str]],
        session: str | None = None,
        on_step: OnStep | None = None,
    ) -> CascadeReply:
        """The first answer that passes its step's checks. Raises `CascadeExhaustedError` when
        none does (or, with `on_exhausted: last`, returns the last answer given)."""
        forwarded = _forwarded(cascade, body)
        outcomes: list[StepOutcome] = []
        last: _StepAnswer | None = None
        for number, step in enumerate(cascade.steps, 1):
            decision = self.router.decide(step.target, messages)
            try:
                answer = replace(await self._ask(forwarded, decision, session), step=number)
            except (NoReplicaAvailableError, ReplicaError) as exc:
                if isinstance(exc, ReplicaError) and exc.is_client_error:
                    raise
                why = Verdict(False, f"unavailable: {exc}")
                outcomes.append(StepOutcome(number, decision.expert, why, 0.0, "unavailable"))
                continue
            verdict, failed, judged = await self._check(step, body, messages, answer.payload)
            expert = answer.routed.expert
            outcome = StepOutcome(number, expert, verdict, answer.cost + judged, failed)
            outcomes.append(outcome)
            if on_step is not None:
                on_step(outcome, answer.payload)
            last = answer
            if verdict.passed:
                return self._reply(cascade, outcomes, answer, body)
            log.info("cascade_escalated", cascade=cascade.name, step=number, reason=verdict.reason)
        trace = CascadeTrace(cascade.name, tuple(outcomes))
        if cascade.on_exhausted is Exhausted.LAST and last is not None:
            return self._reply(cascade, outcomes, last, body)
        steps = tuple(o.describe() for o in trace.outcomes)
        raise CascadeExhaustedError(cascade.name, steps, trace.cost)

    async def answer_at(
        self,
        cascade: Cascade,
        number: int,
        body: Mapping[str, Any],
        messages: Sequence[tuple[str, str]],
    ) -> tuple[dict[str, Any], float]:
        """Step `number`'s (1-based) answer to `body` (its (role, text) `messages` route a
        whole-route step), unchecked, and what it cost."""
        step = cascade.steps[number - 1]
        decision = self.router.decide(step.target, messages)
        answer = await self._ask(_forwarded(cascade, {**body, "stream": False}), decision, None)
        return answer.payload, answer.cost

    async def _ask(
        self, body: Mapping[str, Any], decision: Any, session: str | None
    ) -> _StepAnswer:
        if body.get("stream"):
            routed, stream = await self.router.stream(PATH, body, decision, session, fallback=False)
            chunks = tuple([chunk async for chunk in stream])
            payload = assemble_chunks(chunks)
        else:
            routed, payload = await self.router.post(PATH, body, decision, session, fallback=False)
            chunks = None
        return _StepAnswer(routed, payload, chunks, self.cost(routed.expert, payload.get("usage")))

    async def _check(
        self,
        step: CascadeStep,
        request: Mapping[str, Any],
        messages: Sequence[tuple[str, str]],
        payload: Mapping[str, Any],
    ) -> tuple[Verdict, str, float]:
        """The step's verdict on every choice, the kind of the check that failed, and what the
        judge's answers cost."""
        answers = answers_of(payload)
        if not answers:
            return Verdict(False, "the expert sent no choices"), "empty", 0.0
        verdict = Verdict(True, "passed (no checks)" if not step.checks else "passed")
        spent = 0.0
        for check in step.checks:
            for answer in answers:
                if check.kind is CheckKind.JUDGE:
                    verdict, cost = await self._judge(check, messages, answer)
                    spent += cost
                else:
                    verdict = check_answer(check, request, answer)
                if not verdict.passed:
                    return verdict, check.kind.value, spent
        if step.checks:
            verdict = Verdict(True, "; ".join(self._passed(step.checks)))
        return verdict, "", spent

    @staticmethod
    def _passed(checks: Sequence[CascadeCheck]) -> list[str]:
        return [f"{c.kind.value} passed" for c in checks]

    async def _judge(
        self, check: CascadeCheck, messages: Sequence[tuple[str, str]], answer: Answer
    ) -> tuple[Verdict, float]:
        question = next((text for role, text in reversed(messages) if role == "user"), "")
        prompt = check.prompt.replace("{question}", question).replace("{answer}", answer.content)
        body = {
            "model": check.judge,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 8,
            "temperature": 0,
        }
        decision = self.router.decide(check.judge, [("user", prompt)])
        try:
            routed, payload = await self.router.post(PATH, body, decision, fallback=False)
        except (NoReplicaAvailableError, ReplicaError) as exc:
            return Verdict(False, f"judge: {check.judge} could not answer ({exc})"), 0.0
        cost = self.cost(routed.expert, payload.get("usage"))
        replies = answers_of(payload)
        said = replies[0].content.strip() if replies else ""
        if re.search(check.passes, said, re.IGNORECASE) is None:
            return Verdict(False, f"judge: {check.judge} said {said[:40]!r}"), cost
        return Verdict(True, f"judge: {check.judge} said {said[:40]!r}"), cost

    def _reply(
        self,
        cascade: Cascade,
        outcomes: list[StepOutcome],
        answer: _StepAnswer,
        body: Mapping[str, Any],
    ) -> CascadeReply:
        trace = CascadeTrace(cascade.name, tuple(outcomes))
        payload = dict(answer.payload)
        chunks = answer.chunks
        if chunks is not None:
            chunks = tuple(_as_asked(dict(c), body) for c in chunks)
            chunks = tuple(c for c in chunks if c.get("choices") or c.get("usage"))
        elif not body.get("logprobs"):
            payload["choices"] = [{**c, "logprobs": None} for c in payload.get("choices", [])]
        return CascadeReply(trace, answer.routed, payload, chunks, answer.step)


def _forwarded(cascade: Cascade, body: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with what the checks and the cost need: logprobs, and a streamed usage."""
    forwarded = dict(body)
    if cascade.needs_logprobs:
        forwarded["logprobs"] = True
    if body.get("stream"):
        options = body.get("stream_options") or {}
        forwarded["stream_options"] = {**options, "include_usage": True}
    return forwarded


def _as_asked(chunk: dict[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """A buffered chunk as the client asked for it: no logprobs or usage it did not ask for."""
    if not body.get("logprobs"):
        chunk["choices"] = [{**c, "logprobs": None} for c in chunk.get("choices") or ()]
    if not (body.get("stream_options") or {}).get("include_usage"):
        chunk.pop("usage", None)
    return chunk
