"""The chat use case over a fake engine, resolved through the container."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from largeforge.domain import (
    ChatRequest,
    FinishReason,
    InvalidRequestError,
    Message,
    ModelNotServedError,
    Role,
    SamplingParams,
)


def request(model: str = "fake-model", text: str = "one two three", **params: Any) -> ChatRequest:
    return ChatRequest(model, (Message(Role.USER, text),), SamplingParams(**params))


def test_chat_routes_to_the_named_engine(container: Any, fakes: dict[str, Any]) -> None:
    chat = container.chat()
    assert chat.models() == ("fake-model",)
    completion = asyncio.run(chat.execute(request(max_tokens=2)))
    assert completion.text == "one two"
    assert completion.finish_reason is FinishReason.LENGTH
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 2
    assert fakes["engine"].requests[0][1].max_tokens == 2


def test_unknown_model_names_the_available_ones(container: Any) -> None:
    with pytest.raises(ModelNotServedError, match="Available models: fake-model"):
        asyncio.run(container.chat().execute(request(model="gpt-4")))


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_invalid_sampling_params_name_the_parameter(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**params)
    assert info.value.param == param


def test_close_closes_every_engine(container: Any, fakes: dict[str, Any]) -> None:
    container.chat().close()
    assert fakes["engine"].closed
