"""Fakes for the evaluation tasks: an engine that answers each prompt from a script, and an
`EngineFactory` that opens one per variant and records what it opened and closed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from largeforge.domain.evaluation import ModelVariant, VariantKind
from largeforge.domain.generation import FinishReason, SamplingParams, TokenStep
from tests.fakes import FakeInferenceEngine


def chunks(text: str, size: int = 3) -> list[str]:
    """`text` as token texts of `size` characters (so call triggers are split across tokens)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ScriptedEngine(FakeInferenceEngine):
    """Answers a prompt with the text of the first `(needle, answer)` pair whose needle occurs
    in the prompt's words (the whole rendered conversation, tool results included); else with
    `default`. The answer streams in 3-character tokens and ends with EOS (`stop`), or is cut
    at `max_tokens` (`length`)."""

    def __init__(
        self,
        answers: Sequence[tuple[str, str]] = (),
        default: str = "",
        model_id: str = "fake-model",
    ) -> None:
        super().__init__(model_id=model_id, context_window=4096)
        self.answers = list(answers)
        self.default = default

    def prompt_text(self, prompt_ids: Sequence[int]) -> str:
        return " ".join(self._word(t) for t in prompt_ids)

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        self.requests.append((tuple(prompt_ids), params, adapter))
        text = self.prompt_text(prompt_ids)
        answer = next((a for needle, a in self.answers if needle in text), self.default)
        pieces = chunks(answer)
        budget = params.max_tokens or 1
        for n, piece in enumerate(pieces, start=1):
            at_budget = n == budget  # no room left for the end-of-sequence step
            yield TokenStep(
                self._id(piece), piece, None, FinishReason.LENGTH if at_budget else None
            )
            if at_budget:
                return
        yield TokenStep(0, "", None, FinishReason.STOP)


@dataclass
class FakeEngineFactory:
    """Opens a fresh `ScriptedEngine` (serving `variant.name`) per variant and keeps them."""

    answers: Sequence[tuple[str, str]] = ()
    default: str = ""
    opened: list[ModelVariant] = field(default_factory=list)
    engines: list[ScriptedEngine] = field(default_factory=list)

    def open(self, variant: ModelVariant) -> ScriptedEngine:
        self.opened.append(variant)
        engine = ScriptedEngine(self.answers, self.default, model_id=variant.name)
        self.engines.append(engine)
        return engine


def variant(name: str = "base") -> ModelVariant:
    return ModelVariant(name, VariantKind.BASE, "/models/tiny")
