"""What each training method trains on, picked from a dataset's records: pairs become KTO's
labelled completions, conversations become GRPO's prompts with their last answer as the
reference, and rows a method cannot use are refused naming the field they lack."""

from __future__ import annotations

import pytest

from largeforge.application.splits import select_units
from largeforge.domain.datasets import (
    Conversation,
    EncodedExample,
    LabeledCompletion,
    Message,
    PreferencePair,
    PromptExample,
    Role,
    SftExample,
    TextExample,
)
from largeforge.domain.errors import DatasetError
from largeforge.domain.training import TrainingMethod

Q = (Message(Role.USER, "q"),)
PAIR = PreferencePair(
    Q, (Message(Role.ASSISTANT, "good"),), (Message(Role.ASSISTANT, "bad"),), "p:1"
)
GOOD = LabeledCompletion(Q, (Message(Role.ASSISTANT, "good"),), True, "u:1")
BAD = LabeledCompletion(Q, (Message(Role.ASSISTANT, "bad"),), False, "u:2")
SFT = SftExample(Conversation((*Q, Message(Role.ASSISTANT, "forty-two"))), source="s:3")
ENCODED = EncodedExample((1, 2), (False, True), "s:3")
PROMPT = PromptExample(Q, "42", (("id", "7"),), "r:4")


def test_kto_takes_labelled_completions_and_splits_pairs_into_one_of_each() -> None:
    units = select_units(TrainingMethod.KTO, [(GOOD, None), (PAIR, None), (BAD, None)])
    assert units == (
        GOOD,
        LabeledCompletion(PAIR.prompt, PAIR.chosen, True, "p:1"),
        LabeledCompletion(PAIR.prompt, PAIR.rejected, False, "p:1"),
        BAD,
    )


def test_kto_needs_both_labels() -> None:
    with pytest.raises(DatasetError, match=r"^label: method 'kto' needs both desirable"):
        select_units(TrainingMethod.KTO, [(GOOD, None), (GOOD, None)])


@pytest.mark.parametrize("record", [SFT, PROMPT])
def test_kto_refuses_rows_without_labels_naming_the_field(record: object) -> None:
    with pytest.raises(DatasetError, match=r"^label: method 'kto' needs labelled completions"):
        select_units(TrainingMethod.KTO, [(GOOD, None), (record, None)])  # type: ignore[list-item]


def test_grpo_takes_prompts_and_conversations_as_prompts_with_references() -> None:
    units = select_units(TrainingMethod.GRPO, [(PROMPT, None), (SFT, None)])
    assert units == (PROMPT, PromptExample(Q, "forty-two", source="s:3"))


@pytest.mark.parametrize(
    ("record", "kind"),
    [(PAIR, "preference pairs"), (TextExample("t", "t:9"), "plain text"), (GOOD, "labelled")],
)
def test_grpo_refuses_rows_that_are_not_prompts(record: object, kind: str) -> None:
    with pytest.raises(DatasetError, match=rf"^prompt: method 'grpo' needs prompts .* are {kind}"):
        select_units(TrainingMethod.GRPO, [(record, None)])  # type: ignore[list-item]


@pytest.mark.parametrize("method", [TrainingMethod.DPO, TrainingMethod.ORPO, TrainingMethod.SIMPO])
def test_pair_methods_take_pairs_only(method: TrainingMethod) -> None:
    assert select_units(method, [(PAIR, None)]) == (PAIR,)
    with pytest.raises(DatasetError, match=rf"^chosen: method '{method}' needs preference pairs"):
        select_units(method, [(PAIR, None), (SFT, ENCODED)])


def test_sft_takes_the_encodings_and_refuses_pairs_and_labels_naming_the_method_to_use() -> None:
    assert select_units(TrainingMethod.SFT, [(SFT, ENCODED)]) == (ENCODED,)
    with pytest.raises(DatasetError, match="train with `method: dpo`"):
        select_units(TrainingMethod.SFT, [(SFT, ENCODED), (PAIR, None)])
    with pytest.raises(DatasetError, match=r"\(first: u:1\).*train with `method: kto`"):
        select_units(TrainingMethod.SFT, [(GOOD, None)])


def test_a_conversation_whose_answer_calls_tools_gives_grpo_its_calls_and_tools() -> None:
    import json

    from largeforge.domain.formats import DatasetFormat, parse_row

    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    row = {
        "tools": [tool],
        "messages": [
            {"role": "user", "content": "Time in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
        ],
    }
    record = parse_row(row, DatasetFormat.MESSAGES)
    (prompt,) = select_units(TrainingMethod.GRPO, [(record, None)])
    assert isinstance(prompt, PromptExample)
    assert [t.name for t in prompt.tools] == ["get_time"]
    assert json.loads(prompt.reference or "") == [
        {"name": "get_time", "arguments": {"city": "Oslo"}}
    ]
    as_prompt_row = parse_row({"prompt": "Time in Oslo?", "tools": [tool]}, DatasetFormat.PROMPT)
    assert isinstance(as_prompt_row, PromptExample)
    assert [t.name for t in as_prompt_row.tools] == ["get_time"]
