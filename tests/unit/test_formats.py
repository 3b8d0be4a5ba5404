"""Row formats: detection, parsing, validation rules, conversion round trips (with Hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain import Conversation, Message, Role, SftExample
from largeforge.domain.datasets import (
    LabeledCompletion,
    PreferencePair,
    PromptExample,
    TextExample,
)
from largeforge.domain.formats import (
    DatasetFormat,
    RowError,
    apply_columns,
    detect_format,
    detect_row_format,
    parse_row,
    to_row,
)
from largeforge.domain.text import clean_text, normalized_key
from largeforge.domain.validation import check_record, percentiles

SAMPLES: dict[DatasetFormat, dict[str, Any]] = {
    DatasetFormat.ALPACA: {"instruction": "Add", "input": "1 and 2", "output": "3"},
    DatasetFormat.SHAREGPT: {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
    },
    DatasetFormat.MESSAGES: {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    },
    DatasetFormat.PROMPT_COMPLETION: {"prompt": "hi", "completion": "yo"},
    DatasetFormat.PREFERENCE: {"prompt": "hi", "chosen": "yo", "rejected": "go away"},
    DatasetFormat.UNPAIRED: {"prompt": "hi", "completion": "yo", "label": False},
    DatasetFormat.TEXT: {"text": "Once upon a time."},
    DatasetFormat.PROMPT: {"instruction": "Write a haiku about rain."},
}


@pytest.mark.parametrize("fmt", list(DatasetFormat))
def test_each_format_is_detected_and_parsed(fmt: DatasetFormat) -> None:
    row = SAMPLES[fmt]
    assert detect_row_format(row) is fmt
    detection = detect_format([row, row, {"unrelated": 1}])
    assert detection.format is fmt
    assert (detection.votes, detection.sampled) == (2, 3)
    record = parse_row(row, fmt)
    check_record(record)


def test_alpaca_joins_instruction_and_input_and_keeps_system() -> None:
    record = parse_row({**SAMPLES[DatasetFormat.ALPACA], "system": "terse"}, DatasetFormat.ALPACA)
    assert isinstance(record, SftExample)
    roles = [m.role for m in record.conversation.messages]
    assert roles == [Role.SYSTEM, Role.USER, Role.ASSISTANT]
    assert record.conversation.messages[1].content == "Add\n\n1 and 2"


def test_prompt_completion_accepts_message_lists() -> None:
    row = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    record = parse_row(row, DatasetFormat.PROMPT_COMPLETION)
    assert isinstance(record, SftExample)
    assert [m.role for m in record.conversation.messages] == [
        Role.SYSTEM,
        Role.USER,
        Role.ASSISTANT,
    ]


def test_preference_with_implicit_prompt_splits_the_shared_prefix() -> None:
    user = {"role": "user", "content": "q"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "good"}],
        "rejected": [user, {"role": "assistant", "content": "bad"}],
    }
    record = parse_row(row, DatasetFormat.PREFERENCE)
    assert isinstance(record, PreferencePair)
    assert record.prompt == (Message(Role.USER, "q"),)
    assert record.chosen == (Message(Role.ASSISTANT, "good"),)


def test_content_parts_are_joined() -> None:
    row = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "c"},
        ]
    }
    record = parse_row(row, DatasetFormat.MESSAGES)
    assert isinstance(record, SftExample)
    assert record.conversation.messages[0].content == "ab"


@pytest.mark.parametrize(
    ("row", "fmt", "kind", "field"),
    [
        ({"instruction": "x"}, DatasetFormat.ALPACA, "missing_field", "output"),
        ({"instruction": 1, "output": "y"}, DatasetFormat.ALPACA, "wrong_type", "instruction"),
        (
            {"conversations": [{"from": "bot", "value": "x"}]},
            DatasetFormat.SHAREGPT,
            "unknown_role",
            "conversations[0].from",
        ),
        (
            {"messages": [{"role": "god", "content": "x"}]},
            DatasetFormat.MESSAGES,
            "unknown_role",
            "messages[0].role",
        ),
        ({"prompt": "q"}, DatasetFormat.PROMPT_COMPLETION, "missing_field", "completion"),
        (
            {"prompt": "q", "chosen": 3, "rejected": "r"},
            DatasetFormat.PREFERENCE,
            "wrong_type",
            "chosen",
        ),
        ({"text": None}, DatasetFormat.TEXT, "wrong_type", "text"),
        ([1, 2], DatasetFormat.MESSAGES, "wrong_type", None),
    ],
)
def test_parse_errors_name_field_and_kind(
    row: Any, fmt: DatasetFormat, kind: str, field: str | None
) -> None:
    with pytest.raises(RowError) as info:
        parse_row(row, fmt)
    assert (info.value.kind, info.value.field) == (kind, field)


def conversation(*turns: tuple[Role, str]) -> SftExample:
    return SftExample(Conversation(tuple(Message(r, c) for r, c in turns)))


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (conversation((Role.USER, "q")), "bad_turn_order"),
        (conversation((Role.ASSISTANT, "a")), "bad_turn_order"),
        (conversation((Role.USER, "q"), (Role.USER, "q"), (Role.ASSISTANT, "a")), "bad_turn_order"),
        (
            conversation((Role.USER, "q"), (Role.SYSTEM, "s"), (Role.ASSISTANT, "a")),
            "bad_turn_order",
        ),
        (conversation((Role.USER, "q"), (Role.ASSISTANT, "  ")), "empty_assistant"),
        (
            PreferencePair(
                (Message(Role.USER, "q"),),
                (Message(Role.ASSISTANT, "a"),),
                (Message(Role.ASSISTANT, "a"),),
            ),
            "identical_pair",
        ),
        (
            PreferencePair(
                (Message(Role.USER, "q"),),
                (Message(Role.ASSISTANT, ""),),
                (Message(Role.ASSISTANT, "b"),),
            ),
            "empty_assistant",
        ),
        (TextExample("   "), "empty_field"),
    ],
)
def test_validation_rules(record: Any, kind: str) -> None:
    with pytest.raises(RowError) as info:
        check_record(record)
    assert info.value.kind == kind


def test_column_mapping_renames_to_canonical_fields() -> None:
    row = {"question": "q", "answer": "a", "id": 7}
    mapped = apply_columns(row, {"instruction": "question", "output": "answer"})
    assert mapped == {"instruction": "q", "output": "a", "id": 7}
    assert detect_row_format(mapped) is DatasetFormat.ALPACA


def test_text_cleaning() -> None:
    assert clean_text("  caf\u0065\u0301\r\nline\x00two\u200b  ") == "caf\u00e9\nlinetwo"
    assert normalized_key("Hello   WORLD") == normalized_key("hello world")


def test_percentiles_nearest_rank() -> None:
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([]) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "messages",
                    "role",
                    "content",
                    "instruction",
                    "output",
                    "input",
                    "conversations",
                    "from",
                    "value",
                    "prompt",
                    "completion",
                    "chosen",
                    "rejected",
                    "text",
                    "system",
                    "type",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@given(row=json_values, fmt=st.sampled_from(list(DatasetFormat)))
def test_parsers_never_crash_on_arbitrary_json(row: Any, fmt: DatasetFormat) -> None:
    error: RowError | None = None
    try:
        check_record(parse_row(row, fmt))
    except RowError as raised:
        error = raised
    if error is not None:
        assert error.reason
        assert error.kind


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@given(
    system=st.none() | text,
    turns=st.lists(st.tuples(text, text), min_size=1, max_size=3),
    target=st.sampled_from([DatasetFormat.MESSAGES, DatasetFormat.SHAREGPT]),
)
def test_convert_round_trips_preserve_content(
    system: str | None, turns: list[tuple[str, str]], target: DatasetFormat
) -> None:
    messages = [Message(Role.SYSTEM, system)] if system else []
    for question, answer in turns:
        messages += [Message(Role.USER, question), Message(Role.ASSISTANT, answer)]
    record = SftExample(Conversation(tuple(messages)))
    assert parse_row(to_row(record, target), target) == record


@given(system=st.none() | text, question=text, answer=text)
def test_alpaca_round_trip(system: str | None, question: str, answer: str) -> None:
    messages = [Message(Role.SYSTEM, system)] if system else []
    messages += [Message(Role.USER, question.strip() or "q"), Message(Role.ASSISTANT, answer)]
    record = SftExample(Conversation(tuple(messages)))
    if system is not None and not system.strip():
        return  # a blank system prompt is dropped by design
    assert parse_row(to_row(record, DatasetFormat.ALPACA), DatasetFormat.ALPACA) == record


PROMPT_ROWS = [
    ({"instruction": "Write a haiku about rain."}, "Write a haiku about rain.", None),
    ({"instruction": "Add", "input": "1 and 2", "answer": "3"}, "Add\n\n1 and 2", "3"),
    ({"prompt": "What is 2+2?", "reference": "4", "id": "q7"}, "What is 2+2?", "4"),
    (
        {"prompt": [{"role": "system", "content": "terse"}, {"role": "user", "content": "Hi"}]},
        "Hi",
        None,
    ),
    (
        {"messages": [{"role": "user", "content": "Name a color."}], "output": "red"},
        "Name a color.",
        "red",
    ),
]


@pytest.mark.parametrize(("row", "task", "reference"), PROMPT_ROWS)
def test_prompt_only_rows_are_detected_and_read(
    row: dict[str, Any], task: str, reference: str | None
) -> None:
    assert detect_row_format(row) is DatasetFormat.PROMPT
    record = parse_row(row, DatasetFormat.PROMPT)
    assert isinstance(record, PromptExample)
    check_record(record)
    assert record.task == task
    assert record.prompt[-1].role is Role.USER
    assert record.reference == reference


def test_a_full_conversation_is_a_prompt_through_its_user_turns() -> None:
    for fmt in (DatasetFormat.ALPACA, DatasetFormat.SHAREGPT, DatasetFormat.MESSAGES):
        record = parse_row(SAMPLES[fmt], DatasetFormat.PROMPT)
        assert isinstance(record, PromptExample)
        assert record.prompt[-1].role is Role.USER
        assert record.reference is not None
    pair = parse_row(SAMPLES[DatasetFormat.PROMPT_COMPLETION], DatasetFormat.PROMPT)
    assert isinstance(pair, PromptExample)
    assert (pair.task, pair.reference) == ("hi", "yo")
    tagged = parse_row({"prompt": "q", "id": "a1", "n": 3}, DatasetFormat.PROMPT)
    assert isinstance(tagged, PromptExample)
    assert tagged.metadata == (("id", "a1"), ("n", "3"))


@pytest.mark.parametrize(
    ("row", "field", "kind"),
    [
        ({"prompt": ""}, "prompt", "empty_prompt"),
        ({"prompt": "   "}, "prompt", "empty_prompt"),
        ({"instruction": ""}, "instruction", "empty_prompt"),
        ({"messages": [{"role": "system", "content": "s"}]}, "messages", "no_user_turn"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "messages", "no_user_turn"),
        (
            {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "prompt",
            "no_user_turn",
        ),
        ({"prompt": 3}, "prompt", "wrong_type"),
        ({"prompt": "q", "reference": 4}, "reference", "wrong_type"),
        ({"text": "no prompt here"}, "prompt", "missing_field"),
    ],
)
def test_bad_prompt_rows_name_the_field_and_reason(
    row: dict[str, Any], field: str, kind: str
) -> None:
    with pytest.raises(RowError) as info:
        parse_row(row, DatasetFormat.PROMPT)
    assert (info.value.field, info.value.kind) == (field, kind)
    assert info.value.reason


def test_a_prompt_emptied_by_cleaning_fails_validation() -> None:
    from largeforge.domain.validation import clean_record

    record = parse_row({"prompt": "\u200b"}, DatasetFormat.PROMPT)  # only a zero-width space
    with pytest.raises(RowError, match="empty prompt"):
        check_record(clean_record(record))


@given(
    label=st.sampled_from(
        [(True, True), (False, False), (1, True), (0, False), ("true", True), (" FALSE ", False)]
    ),
    prompt=st.text(min_size=1).filter(str.strip),
    completion=st.text(min_size=1).filter(str.strip),
)
def test_unpaired_rows_read_their_label(
    label: tuple[Any, bool], prompt: str, completion: str
) -> None:
    raw, expected = label
    record = parse_row(
        {"prompt": prompt, "completion": completion, "label": raw}, DatasetFormat.UNPAIRED
    )
    assert record == LabeledCompletion(
        (Message(Role.USER, prompt),), (Message(Role.ASSISTANT, completion),), expected
    )


@pytest.mark.parametrize("label", [2, "maybe", None, 0.5, [True]])
def test_unpaired_row_with_a_bad_label_names_the_field(label: Any) -> None:
    with pytest.raises(RowError, match="'label' must be true or false") as caught:
        parse_row({"prompt": "q", "completion": "a", "label": label}, DatasetFormat.UNPAIRED)
    assert caught.value.field == "label"


def test_unpaired_row_without_a_label_is_not_detected_as_unpaired() -> None:
    assert detect_row_format({"prompt": "q", "completion": "a"}) is DatasetFormat.PROMPT_COMPLETION
    with pytest.raises(RowError, match="missing field 'label'"):
        parse_row({"prompt": "q", "completion": "a"}, DatasetFormat.UNPAIRED)


def test_unpaired_completion_must_be_a_non_empty_assistant_turn() -> None:
    empty = parse_row({"prompt": "q", "completion": "  ", "label": True}, DatasetFormat.UNPAIRED)
    with pytest.raises(RowError, match="empty 'completion'"):
        check_record(empty)
    user = parse_row(
        {"prompt": "q", "completion": [{"role": "user", "content": "a"}], "label": True},
        DatasetFormat.UNPAIRED,
    )
    with pytest.raises(RowError, match="'completion' must be assistant turns"):
        check_record(user)


def test_a_preference_pair_splits_into_one_desirable_and_one_undesirable_completion() -> None:
    pair = parse_row(SAMPLES[DatasetFormat.PREFERENCE], DatasetFormat.PREFERENCE)
    assert isinstance(pair, PreferencePair)
    good, bad = LabeledCompletion.from_pair(pair)
    assert (good.label, bad.label) == (True, False)
    assert good.completion == pair.chosen
    assert bad.completion == pair.rejected
    assert good.prompt == bad.prompt == pair.prompt
