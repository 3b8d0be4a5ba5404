"""Row validation rules, the policy that decides what a bad row costs, and the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum

from largeforge.domain.datasets import (
    Conversation,
    DatasetIssue,
    IssueAction,
    LabeledCompletion,
    Message,
    PreferencePair,
    PromptExample,
    Record,
    Role,
    SftExample,
)
from largeforge.domain.errors import DatasetError
from largeforge.domain.formats import (
    RowError,
    check_alternation,
    check_prompt_turns,
    dialogue_turns,
)
from largeforge.domain.text import clean_text, normalized_key
from largeforge.domain.tool_messages import check_tool_use, uses_tools


class OnError(StrEnum):
    """What a bad row does to the run."""

    SKIP = "skip"  # skip and report it; fail only past `max_skip_fraction`
    FAIL = "fail"  # any bad row fails the run


class Dedupe(StrEnum):
    NONE = "none"
    EXACT = "exact"
    NORMALIZED = "normalized"  # case, unicode form and whitespace ignored


class TooLong(StrEnum):
    SKIP = "skip"
    TRUNCATE = "truncate"


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """How strict dataset preparation is. The defaults suit most runs."""

    on_error: OnError = OnError.SKIP
    max_skip_fraction: float = 0.05
    dedupe: Dedupe = Dedupe.EXACT
    too_long: TooLong = TooLong.SKIP
    clean_text: bool = True
    require_tool_results: bool = True  # a call must be answered before the next user turn

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")


def check_turns(conversation: Conversation, field_name: str = "messages") -> None:
    """An optional leading system message, then user/assistant turns ending with assistant;
    with tools, an assistant turn with calls may be followed by their `tool` results and then
    by the assistant again."""
    turns = dialogue_turns(conversation.messages, field_name)
    if not turns or turns[-1].role is not Role.ASSISTANT:
        raise RowError(
            "the conversation must end with an assistant turn", field_name, kind="bad_turn_order"
        )
    if uses_tools(turns):
        _check_tool_order(turns, field_name)
    else:
        check_alternation(turns, field_name)
    for i, message in enumerate(turns):
        if message.role is Role.ASSISTANT and not (message.content.strip() or message.tool_calls):
            raise RowError(
                f"empty assistant turn (turn {i + 1})", field_name, kind="empty_assistant"
            )


_FOLLOWS: dict[Role, frozenset[Role]] = {
    Role.USER: frozenset({Role.ASSISTANT}),
    Role.ASSISTANT: frozenset({Role.USER}),
    Role.TOOL: frozenset({Role.TOOL, Role.ASSISTANT}),
}
"""Which roles may come after each one (an assistant turn with calls: see `_check_tool_order`)."""


def _check_tool_order(turns: list[Message], field_name: str) -> None:
    previous: Message | None = None
    for i, message in enumerate(turns):
        if previous is None:
            allowed: frozenset[Role] = frozenset({Role.USER})
        elif previous.tool_calls:
            allowed = frozenset({Role.TOOL, Role.USER})
        else:
            allowed = _FOLLOWS[previous.role]
        if message.role not in allowed:
            after = "the start" if previous is None else previous.role.value
            if previous is not None and previous.tool_calls:
                after = "an assistant turn with calls"
            raise RowError(
                f"turn {i + 1} is {message.role.value} but follows {after} (expected "
                f"{' or '.join(sorted(r.value for r in allowed))})",
                field_name,
                kind="bad_turn_order",
            )
        previous = message


def check_record(record: Record, *, require_tool_results: bool = True) -> None:
    """Raise `RowError` when a parsed record cannot be trained on."""
    if isinstance(record, SftExample):
        check_turns(record.conversation)
        messages = record.conversation.messages
        if uses_tools(messages, record.tools):
            check_tool_use(messages, record.tools, require_results=require_tool_results)
    elif isinstance(record, PreferencePair):
        check_turns(Conversation((*record.prompt, Message(Role.ASSISTANT, "x"))), "prompt")
        for name, side in (("chosen", record.chosen), ("rejected", record.rejected)):
            if not side or any(m.role is not Role.ASSISTANT for m in side):
                raise RowError(f"'{name}' must be assistant turns", name, kind="bad_turn_order")
            if not "".join(m.content for m in side).strip():
                raise RowError(f"empty '{name}' response", name, kind="empty_assistant")
        if record.chosen == record.rejected:
            raise RowError(
                "'chosen' and 'rejected' are identical", "rejected", kind="identical_pair"
            )
    elif isinstance(record, PromptExample):
        check_prompt_turns(record.prompt)
    elif isinstance(record, LabeledCompletion):
        check_turns(Conversation((*record.prompt, Message(Role.ASSISTANT, "x"))), "prompt")
        if any(m.role is not Role.ASSISTANT for m in record.completion):
            raise RowError(
                "'completion' must be assistant turns", "completion", kind="bad_turn_order"
            )
        if not "".join(m.content for m in record.completion).strip():
            raise RowError("empty 'completion'", "completion", kind="empty_assistant")
    elif not record.text.strip():
        raise RowError("empty text", "text", kind="empty_field")


def _clean_messages(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    return tuple(replace(m, content=clean_text(m.content)) for m in messages)


def clean_record(record: Record) -> Record:
    """The record with every text field cleaned (`clean_text`)."""
    if isinstance(record, SftExample):
        return replace(
            record, conversation=Conversation(_clean_messages(record.conversation.messages))
        )
    if isinstance(record, PreferencePair):
        return replace(
            record,
            prompt=_clean_messages(record.prompt),
            chosen=_clean_messages(record.chosen),
            rejected=_clean_messages(record.rejected),
        )
    if isinstance(record, LabeledCompletion):
        return replace(
            record,
            prompt=_clean_messages(record.prompt),
            completion=_clean_messages(record.completion),
        )
    if isinstance(record, PromptExample):
        reference = None if record.reference is None else clean_text(record.reference)
        return replace(record, prompt=_clean_messages(record.prompt), reference=reference or None)
    return replace(record, text=clean_text(record.text))


def dedupe_key(record: Record, mode: Dedupe) -> str:
    """A string equal for records that `mode` treats as duplicates."""
    if isinstance(record, SftExample):
        parts: list[object] = [
            [m.role.value, m.content, *[[c.name, c.arguments] for c in m.tool_calls]]
            for m in record.conversation.messages
        ]
        if record.tools:
            parts.append(sorted(t.name for t in record.tools))
    elif isinstance(record, PreferencePair):
        parts = [
            [[m.role.value, m.content] for m in side]
            for side in (record.prompt, record.chosen, record.rejected)
        ]
    elif isinstance(record, PromptExample):
        parts = [[m.role.value, m.content] for m in record.prompt]
    elif isinstance(record, LabeledCompletion):
        parts = [
            [[m.role.value, m.content] for m in side] for side in (record.prompt, record.completion)
        ]
        parts.append(record.label)
    else:
        parts = [record.text]
    key = json.dumps(parts, ensure_ascii=False)
    return normalized_key(key) if mode is Dedupe.NORMALIZED else key


def percentiles(values: list[int], points: tuple[int, ...] = (50, 90, 99, 100)) -> dict[str, int]:
    """Nearest-rank percentiles (`p50`, ..., `max`) of `values`."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
        out["max" if p == 100 else f"p{p}"] = ordered[rank - 1]
    return out


@dataclass(frozen=True)
class ValidationReport:
    """What preparation found in one source: counts, reasons, token lengths, every issue."""

    source: str
    format: str
    detection: str
    rows: int
    kept: int
    issues: tuple[DatasetIssue, ...] = ()
    token_lengths: tuple[int, ...] = field(default=(), repr=False)

    @property
    def dropped(self) -> int:
        return sum(1 for i in self.issues if i.action is not IssueAction.TRUNCATED)

    @property
    def skip_fraction(self) -> float:
        return self.dropped / self.rows if self.rows else 0.0

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(i.kind for i in self.issues).most_common())

    def length_percentiles(self) -> dict[str, int]:
        return percentiles(list(self.token_lengths))

    def violation(self, policy: ValidationPolicy) -> str | None:
        """Why this report breaks `policy`, or None when it is within it."""
        if self.rows == 0:
            return f"{self.source}: no rows"
        if self.kept == 0:
            return f"{self.source}: no usable rows ({self.dropped} of {self.rows} skipped)"
        if policy.on_error is OnError.FAIL and self.issues:
            return f"{self.source}: {len(self.issues)} bad row(s) and on_error is 'fail'"
        if self.skip_fraction > policy.max_skip_fraction:
            return (
                f"{self.source}: {self.dropped} of {self.rows} rows skipped "
                f"({self.skip_fraction:.1%} > max_skip_fraction {policy.max_skip_fraction:.1%})"
            )
        return None

    def as_dict(self, max_issues: int = 20) -> dict[str, object]:
        return {
            "source": self.source,
            "format": self.format,
            "detection": self.detection,
            "rows": self.rows,
            "kept": self.kept,
            "skipped": self.dropped,
            "skip_fraction": round(self.skip_fraction, 4),
            "issues_by_kind": self.by_kind(),
            "token_length": self.length_percentiles(),
            "issues": [
                {
                    "line": i.line,
                    "field": i.field,
                    "kind": i.kind,
                    "reason": i.reason,
                    "action": i.action.value,
                }
                for i in self.issues[:max_issues]
            ],
        }


class DatasetPolicyError(DatasetError):
    """A dataset broke its validation policy; `reports` hold every issue found."""

    def __init__(self, message: str, reports: tuple[ValidationReport, ...]) -> None:
        first = next((i for r in reports for i in r.issues), None)
        detail = f"; first: {first}" if first else ""
        super().__init__(f"{message}{detail}")
        self.reports = reports
