"""`CheckFidelity` over fakes: which checks run on a run, and what each compares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from largeforge.application.fidelity import CheckFidelity
from largeforge.domain.datasets import Message
from largeforge.domain.fidelity import ProbeAnswer
from tests.fakes import FakeModelResolver, FakeTokenizerFactsReader

ANSWER = ProbeAnswer("Bonjour.", 3, True, ("Bon", "jour.", "<|im_end|>"), (2.0, 2.0, 2.0))


class Answers:
    """Answers by (model_dir, adapter); records every call."""

    def __init__(self) -> None:
        self.by_model: dict[tuple[str, str | None], ProbeAnswer] = {}
        self.calls: list[tuple[str, str | None]] = []

    def answers(
        self,
        model_dir: str,
        probes: Sequence[Sequence[Message]],
        max_tokens: int,
        adapter: str | None = None,
    ) -> list[ProbeAnswer]:
        self.calls.append((model_dir, adapter))
        return [self.by_model.get((model_dir, adapter), ANSWER) for _ in probes]


def checker(**parts: Any) -> tuple[CheckFidelity, dict[str, Any]]:
    fakes = {
        "facts": FakeTokenizerFactsReader(),
        "resolver": FakeModelResolver(),
        "reference": Answers(),
        "served": Answers(),
    } | parts
    return CheckFidelity(probes=("Say hello in French.", "Hi"), max_tokens=8, **fakes), fakes


def test_a_run_gets_all_three_checks_and_is_ok_when_all_equal() -> None:
    check, fakes = checker()
    fakes["facts"].records["/runs/r"] = fakes["facts"].default
    base = replace(fakes["facts"].default, chat_template="the base's")  # the record wins
    fakes["facts"].facts["/models/tiny"] = base
    report = check.check_run("/runs/r", "tiny")
    assert [(c.name, c.subject) for c in report.checks] == [
        ("static facts", "/runs/r/merged"),
        ("served_vs_generate", "/runs/r/merged"),
        ("adapter_vs_merged", "/runs/r/adapter"),
    ]
    assert report.ok
    assert fakes["reference"].calls == [("/runs/r/merged", None)]
    assert fakes["served"].calls == [
        ("/runs/r/merged", None),
        ("/runs/r/merged", None),
        ("/models/tiny", "/runs/r/adapter"),  # the adapter beside its base
    ]


def test_a_served_answer_that_differs_from_generate_is_a_mismatch() -> None:
    check, fakes = checker()
    fakes["served"].by_model[("/runs/r/merged", None)] = replace(ANSWER, stopped=False)
    report = check.check_run("/runs/r", "tiny", dynamic=True)
    fields = [m.field for m in report.mismatches]
    assert fields.count("served_vs_generate") == 2  # one per probe
    assert not report.ok


def test_an_adapter_divergence_at_a_greedy_tie_is_a_note_not_a_mismatch() -> None:
    check, fakes = checker()
    tied = ProbeAnswer("Bonsoir.", 3, True, ("Bon", "soir.", "<|im_end|>"), (2.0, 1e-4, 2.0))
    fakes["served"].by_model[("/models/tiny", "/runs/r/adapter")] = tied
    report = check.check_run("/runs/r", "tiny")
    assert report.ok
    (adapter_check,) = [c for c in report.checks if c.name == "adapter_vs_merged"]
    assert len(adapter_check.notes) == 2
    assert "greedy tie" in adapter_check.notes[0]


def test_a_run_without_a_record_is_compared_with_its_base_model() -> None:
    check, fakes = checker()
    fakes["facts"].facts["/models/tiny"] = replace(
        fakes["facts"].default, chat_template="base template"
    )
    report = check.check_run("/runs/old", "tiny", dynamic=False)
    assert [m.field for m in report.mismatches] == ["chat_template"]
    assert fakes["facts"].reads == ["/models/tiny", "/runs/old/merged"]


def test_full_fine_tuning_checks_the_whole_model_it_wrote() -> None:
    check, fakes = checker()
    fakes["facts"].artifacts = lambda run_dir: []
    fakes["facts"].adapter_dir = lambda run_dir: None
    report = check.check_run("/runs/full", "tiny", whole_model="/runs/full/adapter")
    assert [(c.name, c.subject) for c in report.checks] == [
        ("static facts", "/runs/full/adapter"),
        ("served_vs_generate", "/runs/full/adapter"),
    ]
    assert report.notes == ("/runs/full: no LoRA adapter; adapter_vs_merged skipped",)
