"""The `CheckFidelity` use case: do a run's served artifacts still speak as training did?

(a) static facts: each servable model of the run (merged/, quantized ones) has the chat
template, special tokens, bos/eos/pad and generation EOS ids training used (the run's record of
its tokenizer, or for runs made before records, its base model's);
(b) served vs generate: the merged model served at temperature 0 through the HTTP API answers
the probe prompts with exactly what transformers' `generate` makes of the same weights;
(c) adapter vs merged: the base serving the LoRA adapter beside it answers as the merged model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

import structlog

from largeforge.application.ports import (
    ModelResolver,
    ReferenceGenerator,
    ServedProbe,
    TokenizerFactsReader,
)
from largeforge.domain.datasets import Message, Role
from largeforge.domain.fidelity import (
    FidelityCheck,
    FidelityReport,
    ProbeAnswer,
    TokenizerFacts,
    compare_answers,
    compare_facts,
)

log = structlog.get_logger(__name__)

#: Probe prompts (user turns), rendered with each model's chat template.
DEFAULT_PROBES = (
    "What does the Python `len` builtin do?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Say hello in French.",
)
#: New tokens per probe answer.
DEFAULT_MAX_TOKENS = 24
#: LoRA served unmerged and the merged weights differ by ~1e-4 in their logits: a divergence
#: where the top two choices are closer than this is a greedy tie, not a mismatch.
TIE_GAP = 1e-3


class CheckFidelity:
    """Check a run (or a model directory against a training record) for fidelity."""

    def __init__(
        self,
        *,
        facts: TokenizerFactsReader,
        resolver: ModelResolver,
        reference: ReferenceGenerator,
        served: ServedProbe,
        probes: Sequence[str] = DEFAULT_PROBES,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        tie_gap: float = TIE_GAP,
    ) -> None:
        self._facts = facts
        self._resolver = resolver
        self._reference = reference
        self._served = served
        self._probes = tuple(probes)
        self._max_tokens = max_tokens
        self._tie_gap = tie_gap

    # -- what training used ------------------------------------------------------------------

    def trained_facts(self, run_dir: str, base_model: str) -> TokenizerFacts:
        """The run's record of its tokenizer; for older runs, the facts of its base model."""
        recorded = self._facts.recorded(run_dir)
        if recorded is not None:
            return recorded
        log.warning(
            "fidelity_no_record",
            run_dir=run_dir,
            detail="the run has no tokenizer_facts.json (made before records were kept); "
            "comparing with its base model instead",
            base_model=base_model,
        )
        return self._facts.read(self._resolver.resolve(base_model))

    # -- the checks --------------------------------------------------------------------------

    def static(self, model_dir: str, trained: TokenizerFacts) -> FidelityCheck:
        """(a) the tokenizer, template and generation facts of `model_dir` against training's."""
        return static_check(self._facts, model_dir, trained)

    def served_vs_generate(self, model_dir: str) -> FidelityCheck:
        """(b) served at temperature 0 through the HTTP API == transformers `generate`."""
        reference = self._reference.answers(model_dir, self._conversations(), self._max_tokens)
        served = self._served.answers(model_dir, self._conversations(), self._max_tokens)
        return self._compare(
            "served_vs_generate", model_dir, ("generate", reference), ("served", served)
        )

    def adapter_vs_merged(self, base_dir: str, adapter_dir: str, merged_dir: str) -> FidelityCheck:
        """(c) the adapter served beside its base answers as the merged model served."""
        merged = self._served.answers(merged_dir, self._conversations(), self._max_tokens)
        adapter = self._served.answers(
            base_dir, self._conversations(), self._max_tokens, adapter=adapter_dir
        )
        return self._compare(
            "adapter_vs_merged",
            adapter_dir,
            ("the merged model", merged),
            ("the adapter beside its base", adapter),
            tie_gap=self._tie_gap,
        )

    def check_model(
        self, model_dir: str, trained: TokenizerFacts, *, dynamic: bool = True
    ) -> FidelityReport:
        """Check one model directory against a training record: (a), then (b) if `dynamic`."""
        checks = [self.static(model_dir, trained)]
        if dynamic:
            checks.append(self.served_vs_generate(model_dir))
        return self._logged(FidelityReport(tuple(checks)))

    def check_run(
        self,
        run_dir: str,
        base_model: str,
        *,
        dynamic: bool = True,
        whole_model: str | None = None,
    ) -> FidelityReport:
        """Check a run directory: (a) on every servable artifact, and with `dynamic`, (b) on
        the merged model and (c) for adapter/ beside the base model `base_model` (the run's
        plan.model). `whole_model`: the model full fine-tuning wrote (instead of merged/)."""
        trained = self.trained_facts(run_dir, base_model)
        artifacts = self._facts.artifacts(run_dir)
        merged = str(PurePath(run_dir) / "merged")
        if whole_model is not None and whole_model not in artifacts:
            artifacts.insert(0, whole_model)
            merged = whole_model
        notes: list[str] = []
        if not artifacts:
            notes.append(f"{run_dir}: no merged or quantized model to check")
        checks = [self.static(model_dir, trained) for model_dir in artifacts]
        if dynamic and merged in artifacts:
            checks.append(self.served_vs_generate(merged))
            adapter = self._facts.adapter_dir(run_dir)
            if adapter is not None:
                base_dir = self._resolver.resolve(base_model)
                checks.append(self.adapter_vs_merged(base_dir, adapter, merged))
            else:
                notes.append(f"{run_dir}: no LoRA adapter; adapter_vs_merged skipped")
        return self._logged(FidelityReport(tuple(checks), tuple(notes)))

    # -- helpers -----------------------------------------------------------------------------

    def _conversations(self) -> list[list[Message]]:
        return [[Message(Role.USER, probe)] for probe in self._probes]

    def _compare(
        self,
        name: str,
        subject: str,
        expected: tuple[str, list[ProbeAnswer]],
        actual: tuple[str, list[ProbeAnswer]],
        *,
        tie_gap: float = 0.0,
    ) -> FidelityCheck:
        mismatches, notes = [], []
        for probe, want, got in zip(self._probes, expected[1], actual[1], strict=True):
            compared = compare_answers(
                name, probe, (expected[0], want), (actual[0], got), tie_gap=tie_gap
            )
            if compared.mismatch is not None:
                mismatches.append(compared.mismatch)
            if compared.note is not None:
                notes.append(compared.note)
        return FidelityCheck(name, subject, tuple(mismatches), tuple(notes))

    def _logged(self, report: FidelityReport) -> FidelityReport:
        log.info(
            "fidelity_checked",
            ok=report.ok,
            checks=[f"{c.name}: {c.subject}" for c in report.checks],
            mismatches=[m.message for m in report.mismatches],
        )
        return report


def static_check(
    facts: TokenizerFactsReader, model_dir: str, trained: TokenizerFacts
) -> FidelityCheck:
    """The tokenizer, template and generation facts of `model_dir` against `trained`."""
    return FidelityCheck(
        "static facts", model_dir, tuple(compare_facts(trained, facts.read(model_dir)))
    )


def log_static_check(check: FidelityCheck, **context: object) -> None:
    """Log a static check done automatically (after a merge or a quantization)."""
    if check.ok:
        log.info("fidelity_checked", subject=check.subject, ok=True, **context)
    else:
        log.warning(
            "fidelity_checked",
            subject=check.subject,
            ok=False,
            mismatches=[m.message for m in check.mismatches],
            **context,
        )
