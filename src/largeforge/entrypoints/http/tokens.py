"""vLLM's `/tokenize` and `/detokenize` bodies, and their answers.

`/tokenize` takes a prompt (`{"prompt": ...}`) or a conversation (`{"messages": ...}`, rendered
by the chat template with its generation prompt, exactly as a chat completion's prompt is), as
vLLM does. Options this server cannot honour are refused (400, naming them) rather than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, WithJsonSchema, model_validator

from largeforge.application.serving import Tokenized
from largeforge.domain.datasets import Message
from largeforge.domain.tools import ToolSpec
from largeforge.entrypoints.http.openapi import json_schema
from largeforge.entrypoints.http.schemas import ChatMessageIn, Int, _Body, _FieldError, parse_body
from largeforge.entrypoints.http.tool_schemas import ToolIn

MODEL_FIELD = Field(None, min_length=1, description="a served model id; default: the base model")
TOKEN_STRS_FIELD = Field(False, description="also answer each token's vocabulary entry")


def _only(value: bool) -> WithJsonSchema:
    """The documented value of a vLLM option this server supports one way only (the other is
    refused with a 400 naming it)."""
    return WithJsonSchema({"type": "boolean", "const": value})


class TokenizePromptBody(_Body):
    """`POST /tokenize` with a prompt."""

    model: str | None = MODEL_FIELD
    prompt: str
    add_special_tokens: StrictBool = Field(
        True, description="add the tokenizer's special tokens (e.g. BOS) as vLLM does by default"
    )
    return_token_strs: StrictBool | None = TOKEN_STRS_FIELD


class TokenizeChatBody(_Body):
    """`POST /tokenize` with a conversation: the chat completion's prompt tokens."""

    model: str | None = MODEL_FIELD
    messages: list[ChatMessageIn] = Field(min_length=1)
    tools: list[ToolIn] | None = None
    add_generation_prompt: Annotated[StrictBool, _only(True)] = Field(
        True, description="only true: a chat completion's prompt ends with the generation prompt"
    )
    continue_final_message: Annotated[StrictBool, _only(False)] = Field(
        False, description="only false"
    )
    add_special_tokens: Annotated[StrictBool, _only(False)] = Field(
        False, description="only false: the chat template holds its special tokens"
    )
    return_token_strs: StrictBool | None = TOKEN_STRS_FIELD

    @model_validator(mode="after")
    def _supported(self) -> TokenizeChatBody:
        if not self.add_generation_prompt:
            raise _FieldError(
                "add_generation_prompt", "only add_generation_prompt=true is supported"
            )
        if self.continue_final_message:
            raise _FieldError("continue_final_message", "continue_final_message is not supported")
        if self.add_special_tokens:
            raise _FieldError(
                "add_special_tokens",
                "add_special_tokens=true is not supported with messages (the chat template "
                "holds the special tokens)",
            )
        return self

    def conversation(self) -> tuple[Message, ...]:
        return tuple(m.to_domain(i) for i, m in enumerate(self.messages))

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.to_domain() for tool in self.tools or ())


TokenizeBody = TokenizePromptBody | TokenizeChatBody

TOKENIZE_REQUEST = {"anyOf": [json_schema(TokenizePromptBody), json_schema(TokenizeChatBody)]}


def parse_tokenize(data: Any) -> TokenizeBody:
    """A prompt body, or a conversation body when `messages` is given."""
    if isinstance(data, dict) and "messages" in data:
        chat: TokenizeChatBody = parse_body(TokenizeChatBody, data)
        return chat
    prompt: TokenizePromptBody = parse_body(TokenizePromptBody, data)
    return prompt


class DetokenizeBody(_Body):
    """`POST /detokenize`."""

    model: str | None = MODEL_FIELD
    tokens: list[Annotated[Int, Field(ge=0)]] = Field(
        description="token ids of the model's vocabulary"
    )


def tokenize_answer(tokenized: Tokenized) -> dict[str, Any]:
    """vLLM's `TokenizeResponse` (`token_strs` is null unless asked for)."""
    return {
        "count": len(tokenized.ids),
        "max_model_len": tokenized.context_window,
        "tokens": list(tokenized.ids),
        "token_strs": None if tokenized.strings is None else list(tokenized.strings),
    }
