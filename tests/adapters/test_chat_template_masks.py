"""Loss masks from the tokenizer's own template, token by token, for ChatML and Llama-3 styles."""

from __future__ import annotations

from typing import Any

import pytest

from largeforge.adapters.hf.chat_template import ChatTemplateError, HfChatTemplateEncoder
from largeforge.domain import Conversation, Message, Role, SftExample
from largeforge.domain.datasets import TextExample

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CONVERSATION = SftExample(
    Conversation(
        (
            Message(Role.SYSTEM, "Be brief."),
            Message(Role.USER, "Hi there"),
            Message(Role.ASSISTANT, "Hello! How can I help?"),
            Message(Role.USER, "What is 2+2?"),
            Message(Role.ASSISTANT, "2+2 is 4."),
            Message(Role.USER, "And 3+3?"),
            Message(Role.ASSISTANT, "It is 6."),
        )
    )
)
ANSWERS = ["Hello! How can I help?", "2+2 is 4.", "It is 6."]


@pytest.fixture(scope="module")
def chatml() -> Any:
    from largeforge.adapters.models.resolver import packaged_tokenizer

    return packaged_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def llama3(chatml: Any) -> Any:
    import copy

    tokenizer = copy.deepcopy(chatml)
    tokenizer.add_special_tokens(
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"],
        }
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def trained_runs(tokenizer: Any, encoded: Any) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, keep in zip(encoded.input_ids, encoded.trainable, strict=True):
        if keep:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize(("family", "end"), [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_exactly_the_assistant_turns_and_their_end_token_are_trained(
    family: str, end: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(family)
    encoded = HfChatTemplateEncoder(tokenizer).encode(CONVERSATION)
    assert trained_runs(tokenizer, encoded) == [f"{a}{end}" for a in ANSWERS]
    # Token by token: every trained token is an answer token or the end-of-turn token, and
    # re-encoding the answers gives exactly the trained ids.
    expected: list[int] = []
    for answer in ANSWERS:
        expected += tokenizer(answer, add_special_tokens=False)["input_ids"]
        expected.append(tokenizer.convert_tokens_to_ids(end))
    trained_ids = [t for t, keep in zip(encoded.input_ids, encoded.trainable, strict=True) if keep]
    assert trained_ids == expected
    # The whole sequence is the template's own rendering.
    rendered = tokenizer.apply_chat_template(
        [m.as_dict() for m in CONVERSATION.conversation.messages], tokenize=False
    )
    assert tokenizer.decode(list(encoded.input_ids)) == rendered


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_train_on_last_turn_only(family: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(family)
    encoded = HfChatTemplateEncoder(tokenizer, train_on="last").encode(CONVERSATION)
    (run,) = trained_runs(tokenizer, encoded)
    assert run.startswith("It is 6.")


def test_text_examples_train_every_token_and_end_with_eos(chatml: Any) -> None:
    encoded = HfChatTemplateEncoder(chatml).encode_text(TextExample("plain text"))
    assert all(encoded.trainable)
    assert encoded.input_ids[-1] == chatml.eos_token_id


def test_template_that_rewrites_history_is_rejected(chatml: Any) -> None:
    import copy

    tokenizer = copy.deepcopy(chatml)
    # Renders only the latest turn: earlier turns vanish once a later one is added.
    tokenizer.chat_template = (
        "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>>{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="ambiguous"):
        HfChatTemplateEncoder(tokenizer).encode(CONVERSATION)


def test_tokenizer_without_template_is_rejected(chatml: Any) -> None:
    import copy

    tokenizer = copy.deepcopy(chatml)
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        HfChatTemplateEncoder(tokenizer)
