"""Dataset records: messages, conversations and supervised fine-tuning examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from largeforge.domain.tools import ToolCall, ToolSpec

T = TypeVar("T")


class Role(StrEnum):
    """Who speaks a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation.

    An assistant turn may carry `tool_calls` (its `content` then often empty); a `tool` turn is
    the result of the call whose id is `tool_call_id`. `name` is the function's name on a tool
    turn, when given.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The OpenAI/transformers chat-template shape."""
        data: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        return data


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

    def as_dicts(self) -> list[dict[str, Any]]:
        return [m.as_dict() for m in self.messages]


@dataclass(frozen=True, slots=True)
class SftExample:
    """A conversation to fine-tune on: its assistant turns are the training targets.

    `tools` are the functions the conversation may call (rendered with the chat template's
    `tools=`, never trained on). `source` says where it came from (file and 1-based line) for
    error reports. Turn order and calls are checked by
    `largeforge.domain.validation.check_record`, not here, so that a bad row becomes a reported
    issue rather than an exception.
    """

    conversation: Conversation
    source: str = ""
    tools: tuple[ToolSpec, ...] = ()

    @property
    def prompt(self) -> tuple[Message, ...]:
        """Every message before the final turn."""
        return self.conversation.messages[:-1]

    @property
    def completion(self) -> Message:
        """The final turn (an assistant turn once validated)."""
        return self.conversation.last


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) continuation."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    source: str = ""

    def as_conversations(self) -> tuple[Conversation, Conversation]:
        """(prompt + chosen, prompt + rejected)."""
        return Conversation(self.prompt + self.chosen), Conversation(self.prompt + self.rejected)


@dataclass(frozen=True, slots=True)
class LabeledCompletion:
    """One completion of a prompt, labelled desirable (`True`) or not: KTO's unpaired rows.

    A preference pair gives two of them (`from_pair`): its chosen side desirable, its rejected
    side not.
    """

    prompt: tuple[Message, ...]
    completion: tuple[Message, ...]
    label: bool
    source: str = ""

    @staticmethod
    def from_pair(pair: PreferencePair) -> tuple[LabeledCompletion, LabeledCompletion]:
        """(chosen as desirable, rejected as undesirable), both from the pair's row."""
        return (
            LabeledCompletion(pair.prompt, pair.chosen, True, pair.source),
            LabeledCompletion(pair.prompt, pair.rejected, False, pair.source),
        )

    def as_conversation(self) -> Conversation:
        return Conversation(self.prompt + self.completion)


@dataclass(frozen=True, slots=True)
class PromptExample:
    """A prompt without an answer to train on: seed tasks, evaluation prompts, GRPO prompts.

    `prompt` is a conversation that ends with a user turn (checked by
    `largeforge.domain.validation.check_record`); `reference` an optional reference answer;
    `metadata` any other string fields of the row (an id, a category); `tools` the functions the
    prompt offers.
    """

    prompt: tuple[Message, ...]
    reference: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    source: str = ""
    tools: tuple[
        ToolSpec, ...
    ] = ()  # offered to the model with the prompt (rendered, never trained)

    @property
    def task(self) -> str:
        """The last user turn's text."""
        return self.prompt[-1].content if self.prompt else ""


@dataclass(frozen=True, slots=True)
class TextExample:
    """Raw text, trained on every token (continued pre-training)."""

    text: str
    source: str = ""


Record = SftExample | PreferencePair | TextExample | PromptExample | LabeledCompletion
"""Anything a dataset row can become."""


@dataclass(frozen=True, slots=True)
class EncodedExample:
    """Token ids and which of them carry a training label."""

    input_ids: tuple[int, ...]
    trainable: tuple[bool, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.trainable):
            raise ValueError("input_ids and trainable must have the same length")

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def trainable_tokens(self) -> int:
        return sum(self.trainable)

    def truncated(self, max_length: int) -> EncodedExample:
        return EncodedExample(self.input_ids[:max_length], self.trainable[:max_length], self.source)

    def labels(self, ignore_index: int = -100) -> list[int]:
        """Labels for a causal LM loss: the token id where trained, `ignore_index` elsewhere."""
        return [
            t if keep else ignore_index
            for t, keep in zip(self.input_ids, self.trainable, strict=True)
        ]


class IssueAction(StrEnum):
    """What was done with a row that had a problem."""

    SKIPPED = "skipped"
    TRUNCATED = "truncated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DatasetIssue:
    """A problem with one row: where, what kind, why, and what was done about it."""

    source: str
    line: int
    reason: str
    action: IssueAction = IssueAction.SKIPPED
    field: str | None = None
    kind: str = "invalid_row"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}"
        what = f" field '{self.field}'" if self.field else ""
        return f"{where}{what}: {self.reason} ({self.action.value})"


@dataclass(frozen=True, slots=True)
class LoadedDataset:
    """Records read from a source, with every row-level issue counted."""

    examples: tuple[Record, ...]
    issues: tuple[DatasetIssue, ...] = field(default=())
    format: str = "unknown"

    @property
    def rows_seen(self) -> int:
        dropped = sum(1 for i in self.issues if i.action is not IssueAction.TRUNCATED)
        return len(self.examples) + dropped


def split_examples(
    examples: tuple[T, ...], val_size: float, seed: int
) -> tuple[tuple[T, ...], tuple[T, ...]]:
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
