"""Loss masks of tool-use conversations, token by token, for three chat templates.

Qwen2.5's (hermes `<tool_call>` JSON, ChatML turns) and Llama-3.1's (`{"name", "parameters"}`
calls, `ipython` tool turns) render `tools=` themselves; SmolLM2's does not, so the hermes
fallback block is used, as the server does. In every case the assistant turns, calls included,
are trained through their end-of-turn token, and the tools declaration and the tool results are
not; the text before each trained turn is exactly the prompt the server renders. (As text: at
that boundary a tokenizer may split `\n\n` differently when text follows, Llama-3.1's template
on SmolLM2's vocabulary does.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from largeforge.adapters.hf.chat_template import HfChatTemplateEncoder
from largeforge.adapters.hf.prompts import TokenizerCodec
from largeforge.adapters.models.resolver import packaged_tokenizer
from largeforge.application.data import PrepareDataset
from largeforge.domain.datasets import EncodedExample, SftExample
from largeforge.domain.formats import DatasetFormat, DatasetSpec, parse_row
from tests.fakes import InMemoryRowSource
from tests.template_tokenizers import tokenizer_with_template

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a time zone.",
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
        },
    },
]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
ROW = {
    "tools": TOOLS,
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {**CALL, "function": {**CALL["function"], "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
        {"role": "assistant", "content": "It is 18 C in Paris."},
    ],
}

HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
EXPECTED = {
    "qwen2_5": [f"{HERMES_CALL}<|im_end|>", "It is 18 C in Paris.<|im_end|>"],
    "llama3_1": [
        '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
        "It is 18 C in Paris.<|eot_id|>",
    ],
    "smollm2": [f"{HERMES_CALL}<|im_end|>", "It is 18 C in Paris.<|im_end|>"],
}
RESULT_TEXT = {
    "qwen2_5": '{"temp": 18}',
    "llama3_1": '"{\\"temp\\": 18}"',
    "smollm2": '{"temp": 18}',
}


def tokenizer(name: str) -> Any:
    if name == "smollm2":
        return packaged_tokenizer("smollm2-135m-instruct")
    return tokenizer_with_template(name)


def trained_runs(encoded: EncodedExample) -> list[list[int]]:
    """The maximal runs of consecutive trained tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, keep in zip(encoded.input_ids, encoded.trainable, strict=True):
        if keep and previous:
            runs[-1].append(token)
        elif keep:
            runs.append([token])
        previous = keep
    return runs


class Codec(TokenizerCodec):
    def __init__(self, tok: Any) -> None:
        self._tokenizer = tok


def example(row: dict[str, Any] = ROW) -> SftExample:
    record = parse_row(row, DatasetFormat.MESSAGES)
    assert isinstance(record, SftExample)
    return record


@pytest.mark.parametrize("name", ["qwen2_5", "llama3_1", "smollm2"])
def test_calls_and_answers_are_trained_token_by_token_results_and_tools_are_not(
    name: str,
) -> None:
    tok = tokenizer(name)
    encoder = HfChatTemplateEncoder(tok)
    assert encoder.native_tools is (name != "smollm2")
    encoded = encoder.encode(example())

    runs = trained_runs(encoded)
    assert [tok.decode(run) for run in runs] == EXPECTED[name]
    for run, text in zip(runs, EXPECTED[name], strict=True):  # the very tokens, one by one
        assert run == tok(text, add_special_tokens=False)["input_ids"]
    assert encoded.trainable_tokens == sum(len(run) for run in runs)

    untrained = tok.decode(
        [t for t, keep in zip(encoded.input_ids, encoded.trainable, strict=True) if not keep]
    )
    assert RESULT_TEXT[name] in untrained  # the tool result is context only
    assert '"name": "get_time"' in untrained  # and so is the tools declaration
    assert "Weather in Paris?" in untrained


@pytest.mark.parametrize("name", ["qwen2_5", "llama3_1", "smollm2"])
def test_the_text_before_each_trained_turn_is_the_prompt_the_server_renders(name: str) -> None:
    tok = tokenizer(name)
    record = example()
    encoded = HfChatTemplateEncoder(tok).encode(record)
    codec = Codec(tok)
    messages = record.conversation.messages
    starts = [
        k for k, keep in enumerate(encoded.trainable) if keep and not encoded.trainable[k - 1]
    ]
    # before the call: the user turn; before the answer: user, call and result
    for start, upto in zip(starts, (1, 3), strict=True):
        served = codec.chat_text(messages[:upto], record.tools)
        assert tok.decode(encoded.input_ids[:start]) == served


def test_a_conversation_that_ends_with_the_call_trains_the_call() -> None:
    row = {"tools": TOOLS, "messages": ROW["messages"][:2]}
    tok = tokenizer("qwen2_5")
    runs = trained_runs(HfChatTemplateEncoder(tok).encode(example(row)))
    assert [tok.decode(run) for run in runs] == [f"{HERMES_CALL}<|im_end|>"]


def test_train_on_last_trains_only_the_final_answer() -> None:
    tok = tokenizer("llama3_1")
    runs = trained_runs(HfChatTemplateEncoder(tok, train_on="last").encode(example()))
    assert [tok.decode(run) for run in runs] == ["It is 18 C in Paris.<|eot_id|>"]


def parallel_row() -> dict[str, Any]:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "get_weather", "arguments": a}}
        for i, a in enumerate(('{"city": "Rome"}', '{"city": "Oslo"}'))
    ]
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Rome and Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
        ],
    }


def test_a_template_that_refuses_a_row_makes_it_that_rows_issue_not_a_crash() -> None:
    """Llama 3.1's template raises on parallel calls: that row is skipped with the reason."""
    rows = [ROW, parallel_row(), {**ROW, "messages": [*ROW["messages"][:1], ROW["messages"][1]]}]
    prepared = PrepareDataset(InMemoryRowSource({"mem": rows})).execute(
        DatasetSpec("mem"), encoder=HfChatTemplateEncoder(tokenizer("llama3_1"))
    )
    kinds = [(issue.line, issue.kind) for issue in prepared.report.issues]
    assert kinds == [(2, "template_refused")]
    assert "only supports single tool-calls" in prepared.report.issues[0].reason
    assert prepared.report.kept == 2


def test_parallel_calls_are_one_trained_turn_on_qwen() -> None:
    tok = tokenizer("qwen2_5")
    runs = trained_runs(HfChatTemplateEncoder(tok).encode(example(parallel_row())))
    calls: Sequence[str] = [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    ]
    assert [tok.decode(run) for run in runs] == ["\n".join(calls) + "<|im_end|>"]
