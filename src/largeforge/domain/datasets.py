"""Dataset records: messages, conversations and supervised fine-tuning examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Who speaks a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        """The OpenAI/transformers chat-template shape."""
        return {"role": self.role.value, "content": self.content}


@dataclass(frozen=True, slots=True)
class Conversation:
    """An ordered list of messages: optional system first, then user/assistant turns."""

    messages: tuple[Message, ...]

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("a conversation needs at least one message")

    @property
    def last(self) -> Message:
        return self.messages[-1]

    def as_dicts(self) -> list[dict[str, str]]:
        return [m.as_dict() for m in self.messages]


@dataclass(frozen=True, slots=True)
class SftExample:
    """A conversation to fine-tune on; the final assistant turn is the training target.

    `source` says where it came from (file and 1-based line) for error reports.
    """

    conversation: Conversation
    source: str = ""

    def __post_init__(self) -> None:
        if self.conversation.last.role is not Role.ASSISTANT:
            raise ValueError("an SFT example must end with an assistant message")

    @property
    def prompt(self) -> tuple[Message, ...]:
        """Every message before the final assistant turn."""
        return self.conversation.messages[:-1]

    @property
    def completion(self) -> Message:
        """The final assistant turn, the training target."""
        return self.conversation.last


class IssueAction(StrEnum):
    """What was done with a row that had a problem."""

    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DatasetIssue:
    """A problem with one row: where, what, and what was done about it."""

    source: str
    line: int
    reason: str
    action: IssueAction = IssueAction.SKIPPED
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}"
        what = f" field '{self.field}'" if self.field else ""
        return f"{where}{what}: {self.reason} ({self.action.value})"


@dataclass(frozen=True, slots=True)
class LoadedDataset:
    """Examples read from a source, with every row-level issue counted."""

    examples: tuple[SftExample, ...]
    issues: tuple[DatasetIssue, ...] = field(default=())
    format: str = "unknown"

    @property
    def rows_seen(self) -> int:
        return len(self.examples) + len(self.issues)


def split_examples(
    examples: tuple[SftExample, ...], val_size: float, seed: int
) -> tuple[tuple[SftExample, ...], tuple[SftExample, ...]]:
    """Deterministically shuffle and split into (train, validation).

    The validation split gets `round(len * val_size)` examples, at least one when `val_size > 0`
    and there are two or more examples; training always keeps at least one.
    """
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = 0
    if val_size > 0 and len(examples) >= 2:
        n_val = min(max(1, round(len(examples) * val_size)), len(examples) - 1)
    val = tuple(examples[i] for i in order[:n_val])
    train = tuple(examples[i] for i in order[n_val:])
    return train, val
