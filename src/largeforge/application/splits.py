"""A run's data as training saw it: prepared, policy-checked, mixed, split into train and eval.

`RunTraining` trains on these splits and `largeforge eval` scores the eval split again, so
both see the same rows with the same loss masks (checked by the data fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from largeforge.application.data import PrepareDataset, enforce_policy, mix
from largeforge.application.ports import EncoderFactory
from largeforge.domain.datasets import (
    Conversation,
    EncodedExample,
    LabeledCompletion,
    Message,
    PreferencePair,
    PromptExample,
    Record,
    Role,
    SftExample,
    split_examples,
)
from largeforge.domain.errors import DatasetError
from largeforge.domain.training import TrainingMethod, TrainingPlan, TrainingUnit, UnitKind
from largeforge.domain.validation import DatasetPolicyError

log = structlog.get_logger(__name__)

MAX_LOGGED_ISSUES = 20


@dataclass(frozen=True, slots=True)
class RunData:
    """The training and eval units of a plan."""

    train: tuple[TrainingUnit, ...]
    val: tuple[TrainingUnit, ...]


def prepare_run_data(
    prepare: PrepareDataset,
    encoders: EncoderFactory,
    plan: TrainingPlan,
    model_dir: str,
    on_reports: Callable[[list[dict[str, Any]]], None] | None = None,
) -> RunData:
    """Validated training units: preference pairs for methods that train on pairs (DPO),
    encoded conversations for the others (SFT), split by the plan's seed. `on_reports` gets
    the datasets' reports before the policy is enforced (so a refused run keeps them)."""
    # Prompts are templated by the trainer, at generation: nothing to encode for GRPO.
    prompts = plan.method.unit_kind is UnitKind.PROMPTS
    encoder = None if prompts else encoders.for_model(model_dir, plan.train_on)
    prepared = [
        prepare.execute(spec, plan.validation, encoder, plan.max_length) for spec in plan.datasets
    ]
    reports = [p.report.as_dict(max_issues=MAX_LOGGED_ISSUES) for p in prepared]
    if on_reports is not None:
        on_reports(reports)
    for item in prepared:
        for issue in item.report.issues[:MAX_LOGGED_ISSUES]:
            log.warning("dataset_issue", issue=str(issue), kind=issue.kind)
    try:
        enforce_policy(prepared, plan.validation)
    except DatasetPolicyError:
        log.error("dataset_policy_failed", reports=reports)
        raise
    mixed = mix(prepared, plan.seed)
    units = select_units(plan.method, mixed)
    train, val = split_examples(units, plan.val_size, plan.seed)
    return RunData(train, val)


_WANTED = {
    UnitKind.PAIRS: "preference pairs (prompt/chosen/rejected)",
    UnitKind.LABELED: "labelled completions (prompt/completion/label) or preference pairs",
    UnitKind.PROMPTS: "prompts (prompt, instruction or messages; an optional reference answer)",
}


def select_units(
    method: TrainingMethod, mixed: Sequence[tuple[Record, EncodedExample | None]]
) -> tuple[TrainingUnit, ...]:
    """The units `method` trains on, from the mixed records; a `DatasetError` naming the field
    the rows lack (and a row that lacks it) when they are not what the method needs."""
    kind = method.unit_kind
    units: list[TrainingUnit] = []
    wrong: list[Record] = []
    for record, encoded in mixed:
        if kind is UnitKind.CONVERSATIONS:
            if isinstance(record, PreferencePair | LabeledCompletion):
                wrong.append(record)
            elif encoded is not None:
                units.append(encoded)
        elif kind is UnitKind.PAIRS:
            if isinstance(record, PreferencePair):
                units.append(record)
            else:
                wrong.append(record)
        elif kind is UnitKind.LABELED:
            if isinstance(record, LabeledCompletion):
                units.append(record)
            elif isinstance(record, PreferencePair):
                units.extend(LabeledCompletion.from_pair(record))
            else:
                wrong.append(record)
        elif isinstance(record, PromptExample):
            units.append(record)
        elif isinstance(record, SftExample):
            units.append(as_prompt(record))
        else:
            wrong.append(record)
    if wrong:
        raise DatasetError(_wrong_units(method, kind, wrong, len(mixed)))
    if (
        kind is UnitKind.LABELED
        and len({u.label for u in units if isinstance(u, LabeledCompletion)}) < 2
    ):
        raise DatasetError(
            "label: method 'kto' needs both desirable (label: true) and undesirable "
            "(label: false) completions; every row has the same label"
        )
    return tuple(units)


def _wrong_units(method: TrainingMethod, kind: UnitKind, wrong: list[Record], total: int) -> str:
    first = wrong[0]
    where = f" (first: {first.source})" if first.source else ""
    if kind is UnitKind.CONVERSATIONS:
        if isinstance(first, PreferencePair):
            what = "preference pairs (prompt/chosen/rejected) train with `method: dpo`, `orpo`, "
            what += "`simpo` or `kto`"
        else:
            what = "labelled completions (prompt/completion/label) train with `method: kto`"
        return (
            f"{len(wrong)} of {total} rows{where}: {what}, not {method}; give {method} "
            "conversations (alpaca, sharegpt, messages, prompt/completion or text)"
        )
    field = {UnitKind.PAIRS: "chosen", UnitKind.LABELED: "label", UnitKind.PROMPTS: "prompt"}
    return (
        f"{field[kind]}: method '{method}' needs {_WANTED[kind]}; {len(wrong)} of {total} rows "
        f"are {_kind_of(first)}{where}"
    )


def _kind_of(record: Record) -> str:
    if isinstance(record, PreferencePair):
        return "preference pairs"
    if isinstance(record, LabeledCompletion):
        return "labelled completions"
    if isinstance(record, PromptExample):
        return "prompts without answers"
    if isinstance(record, SftExample):
        return "conversations without labels"
    return "plain text"


def as_prompt(example: SftExample) -> PromptExample:
    """A conversation as a prompt with its tools: its turns before the last assistant turn;
    that turn's text the reference answer, or its calls when it makes some (as a JSON list of
    `{"name", "arguments"}`, what the `tool_call` reward reads)."""
    messages = example.conversation.messages
    last = messages[-1]
    reference = last.content or None
    if last.tool_calls:
        calls = [{"name": c.name, "arguments": c.arguments_value()} for c in last.tool_calls]
        reference = json.dumps(calls, ensure_ascii=False)
    return PromptExample(messages[:-1], reference, source=example.source, tools=example.tools)


def encoded_units(
    units: Sequence[TrainingUnit], encoders: EncoderFactory, train_on: str, model_dir: str
) -> list[EncodedExample]:
    """Units as encoded conversations, the answers training moved towards: SFT units as they
    are; a preference pair's prompt with its chosen answer; a desirable labelled completion
    (undesirable ones are left out); a prompt with its reference answer (prompts without one
    are left out). With the plan's masks."""
    encoder = None
    encoded: list[EncodedExample] = []
    for unit in units:
        if isinstance(unit, EncodedExample):
            encoded.append(unit)
            continue
        if isinstance(unit, PreferencePair):
            answer = unit.chosen
        elif isinstance(unit, LabeledCompletion):
            if not unit.label:
                continue
            answer = unit.completion
        elif unit.reference is None:
            continue
        else:
            answer = (Message(Role.ASSISTANT, unit.reference),)
        encoder = encoder or encoders.for_model(model_dir, train_on)
        conversation = Conversation(unit.prompt + answer)
        encoded.append(encoder.encode(SftExample(conversation, source=unit.source)))
    return encoded
