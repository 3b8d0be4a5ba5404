"""The vendored Qwen2.5 and Llama-3.1 tool-calling templates render, on single-id special tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.template_tokenizers import TEMPLATE_SPECS, template_text, tokenizer_with_template

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 18}'},
    {"role": "assistant", "content": "It is 18 degrees in Paris."},
]

EXPECTED_FRAGMENTS = {
    "qwen2_5": [
        "<tools>\n",
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n",
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n',
        '<|im_start|>user\n<tool_response>\n{"temp": 18}\n</tool_response><|im_end|>\n',
        "<|im_start|>assistant\nIt is 18 degrees in Paris.<|im_end|>\n",
    ],
    "llama3_1": [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n",
        "What is the weather in Paris?<|eot_id|>",
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
        '"parameters": {"city": "Paris"}}<|eot_id|>',
        # The official template runs a string tool result through `tojson` (strings are iterable).
        '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp\\": 18}"<|eot_id|>',
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 18 degrees in Paris.<|eot_id|>",
    ],
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_SPECS))
def test_template_renders_the_tool_call_conversation(name: str) -> None:
    tokenizer = tokenizer_with_template(name)
    assert tokenizer.chat_template == template_text(name)

    text = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)

    for fragment in EXPECTED_FRAGMENTS[name]:
        assert fragment in text
    assert text.rstrip("\n").endswith(TEMPLATE_SPECS[name].eos_token)


@pytest.mark.parametrize("name", sorted(TEMPLATE_SPECS))
def test_special_tokens_are_single_ids(name: str) -> None:
    tokenizer = tokenizer_with_template(name)
    spec = TEMPLATE_SPECS[name]

    ids = [tokenizer.encode(token, add_special_tokens=False) for token in spec.special_tokens]

    assert all(len(token_ids) == 1 for token_ids in ids), dict(
        zip(spec.special_tokens, ids, strict=True)
    )
    assert len({token_ids[0] for token_ids in ids}) == len(ids)
    assert tokenizer.eos_token == spec.eos_token
    assert tokenizer.bos_token == spec.bos_token
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == spec.eos_token


def test_llama_bos_is_rendered_once() -> None:
    tokenizer = tokenizer_with_template("llama3_1")

    text = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    assert ids.count(tokenizer.bos_token_id) == 1
    assert ids[0] == tokenizer.bos_token_id


def test_copies_are_independent() -> None:
    first = tokenizer_with_template("qwen2_5")
    first.chat_template = "changed"

    assert tokenizer_with_template("qwen2_5").chat_template == template_text("qwen2_5")
