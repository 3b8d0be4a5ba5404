"""A run's data as training saw it: prepared, policy-checked, mixed, split into train and eval.

`RunTraining` trains on these splits and `largeforge eval` scores the eval split again, so
both see the same rows with the same loss masks (checked by the data fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from largeforge.application.data import PrepareDataset, enforce_policy, mix
from largeforge.application.ports import EncoderFactory
from largeforge.domain.datasets import (
    Conversation,
    EncodedExample,
    PreferencePair,
    SftExample,
    split_examples,
)
from largeforge.domain.errors import DatasetError
from largeforge.domain.training import TrainingPlan, TrainingUnit
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
    encoder = encoders.for_model(model_dir, plan.train_on)
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
    units: tuple[TrainingUnit, ...]
    pairs = tuple(r for r, _ in mixed if isinstance(r, PreferencePair))
    if plan.method.trains_on_pairs:
        if len(pairs) != len(mixed):
            raise DatasetError(
                f"method '{plan.method}' needs preference pairs (prompt/chosen/rejected); "
                f"{len(mixed) - len(pairs)} of {len(mixed)} rows are not"
            )
        units = pairs
    else:
        if pairs:
            raise DatasetError(
                "preference pairs (prompt/chosen/rejected) train with `method: dpo`, not "
                "SFT; give SFT data (alpaca, sharegpt, messages, prompt/completion or text)"
            )
        units = tuple(e for _, e in mixed if e is not None)
    train, val = split_examples(units, plan.val_size, plan.seed)
    return RunData(train, val)


def encoded_units(
    units: Sequence[TrainingUnit], encoders: EncoderFactory, train_on: str, model_dir: str
) -> list[EncodedExample]:
    """Units as encoded conversations: SFT units as they are; a preference pair as its prompt
    with the chosen answer (the answer training moved towards), with the plan's masks."""
    encoder = None
    encoded: list[EncodedExample] = []
    for unit in units:
        if isinstance(unit, EncodedExample):
            encoded.append(unit)
            continue
        encoder = encoder or encoders.for_model(model_dir, train_on)
        conversation = Conversation(unit.prompt + unit.chosen)
        encoded.append(encoder.encode(SftExample(conversation, source=unit.source)))
    return encoded
