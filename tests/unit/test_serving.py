"""The serving use case (`TextGeneration`) over the word-level fake engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from largeforge.application.serving import TextGeneration
from largeforge.domain import (
    ChatRequest,
    FinishReason,
    InvalidRequestError,
    Message,
    ModelNotServedError,
    Role,
    SamplingParams,
)
from largeforge.domain.errors import ContextLengthExceededError
from largeforge.domain.generation import ChoiceDelta, OverflowPolicy, TextRequest, Usage
from tests.fakes import FakeInferenceEngine


def chat(text: str = "one two three", n: int = 1, **params: Any) -> ChatRequest:
    return ChatRequest("fake-model", (Message(Role.USER, text),), SamplingParams(**params), n)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def events(stream: Any) -> list[Any]:
    return [e async for e in stream]


def test_chat_answers_with_exact_usage(container: Any, fakes: dict[str, Any]) -> None:
    service = container.generation()
    assert service.models() == ("fake-model",)
    completion = run(service.chat(chat(max_tokens=2, temperature=0)))
    assert completion.text == "one two"
    assert completion.finish_reason is FinishReason.LENGTH
    prompt_ids, params, _adapter = fakes["engine"].requests[0]
    assert completion.usage.prompt_tokens == len(prompt_ids)
    assert completion.usage.completion_tokens == 2
    assert params.max_tokens == 2


def test_eos_ends_with_stop_and_counts_as_a_generated_token() -> None:
    service = TextGeneration([FakeInferenceEngine()])
    completion = run(service.chat(chat(temperature=0)))
    assert completion.text == "one two three"
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage.completion_tokens == 4  # three words and EOS


def test_unknown_model_names_the_available_ones(container: Any) -> None:
    with pytest.raises(ModelNotServedError, match="Available models: fake-model"):
        run(container.generation().chat(ChatRequest("gpt-4", (Message(Role.USER, "hi"),))))


def test_adapters_are_model_ids_of_their_own() -> None:
    engine = FakeInferenceEngine()
    engine.adapter_names = ("pirate",)
    service = TextGeneration([engine])
    assert service.models() == ("fake-model", "pirate")
    assert service.base_of("pirate") == "fake-model"
    request = ChatRequest("pirate", (Message(Role.USER, "ahoy"),), SamplingParams(temperature=0))
    assert run(service.chat(request)).text == "[pirate] ahoy"
    assert engine.requests[-1][2] == "pirate"


def test_stop_string_spanning_tokens_is_cut_and_frees_the_engine() -> None:
    engine = FakeInferenceEngine()
    service = TextGeneration([engine])
    completion = run(service.chat(chat("alpha beta gamma delta", stop=("ta gam",), temperature=0)))
    assert completion.text == "alpha be"
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage.completion_tokens == 3  # generation stopped once the stop appeared
    assert engine.active == 0


def test_n_choices_are_indexed_with_distinct_reproducible_seeds() -> None:
    service = TextGeneration([FakeInferenceEngine()])
    text = "a b c d e f g h"
    first = run(service.chat(chat(text, n=3, seed=7, temperature=1.0)))
    again = run(service.chat(chat(text, n=3, seed=7, temperature=1.0)))
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) > 1
    assert first.usage.completion_tokens == 3 * 9


def test_stream_has_one_finish_per_choice_then_usage() -> None:
    service = TextGeneration([FakeInferenceEngine()])
    out = run(events(service.stream_chat(chat("x y", n=2, temperature=0))))
    assert isinstance(out[-1], Usage)
    deltas = [e for e in out if isinstance(e, ChoiceDelta)]
    finishes = [d.index for d in deltas if d.finish_reason is not None]
    assert sorted(finishes) == [0, 1]
    for index in (0, 1):
        assert "".join(d.text for d in deltas if d.index == index) == "x y"


def test_closing_a_stream_early_cancels_generation() -> None:
    engine = FakeInferenceEngine()
    service = TextGeneration([engine])

    async def take_one() -> None:
        stream = service.stream_chat(chat("a b c d e f", temperature=0))
        await anext(stream)
        assert engine.active == 1
        await stream.aclose()

    run(take_one())
    assert engine.active == 0


def test_overflow_rejects_or_truncates_max_tokens_but_never_the_prompt() -> None:
    engine = FakeInferenceEngine(context_window=10)
    words = "a b c d e"  # 8 prompt tokens with the template
    with pytest.raises(ContextLengthExceededError, match="8 in the prompt, 5 in the completion"):
        run(TextGeneration([engine]).chat(chat(words, max_tokens=5)))
    lenient = TextGeneration([engine], OverflowPolicy.TRUNCATE_MAX_TOKENS)
    completion = run(lenient.chat(chat(words, max_tokens=5, temperature=0)))
    assert completion.usage.completion_tokens == 2  # what the window had room for
    assert completion.finish_reason is FinishReason.LENGTH
    with pytest.raises(ContextLengthExceededError):
        run(lenient.chat(chat("a b c d e f g h i j k")))


def test_text_completion_with_echo_and_prompt_logprobs() -> None:
    service = TextGeneration([FakeInferenceEngine()])
    request = TextRequest(
        "fake-model", "<user> hello world", SamplingParams(1, 0.0, logprobs=1), echo=True
    )
    completion = run(service.complete(request))
    (choice,) = completion.choices
    assert choice.text == "<user> hello world" + "hello"
    assert choice.prompt_logprobs is not None
    assert [e.logprob for e in choice.prompt_logprobs] == [None, -1.0, -1.0]
    assert choice.logprobs is not None
    assert len(choice.logprobs[0].top) == 1


def test_token_id_prompts_are_accepted() -> None:
    engine = FakeInferenceEngine()
    service = TextGeneration([engine])
    ids = tuple(engine.tokenize("<user> red green"))
    params = SamplingParams(max_tokens=5, temperature=0)
    completion = run(service.complete(TextRequest("fake-model", ids, params, echo=True)))
    assert completion.text == "<user> red green" + "red green"
    assert completion.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logprobs": 21}, "top_logprobs"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_invalid_sampling_params_name_the_parameter(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**params)
    assert info.value.param == param


def test_n_is_bounded() -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat(n=17)
    assert info.value.param == "n"


def test_close_closes_every_engine(container: Any, fakes: dict[str, Any]) -> None:
    container.generation().close()
    assert fakes["engine"].closed
