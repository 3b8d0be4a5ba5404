"""LangChain's `ChatOpenAI` and LiteLLM against a real `largeforge serve` on loopback.

The model is the tiny random Llama, so the cases check what the clients receive (text, streamed
chunks, batches, usage) against the official `openai` client's answer to the same request, not
the prose. Greedy decoding makes the answers comparable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow
KEY = "sk-langchain"
MODEL = "tiny"
QUESTIONS = ["Say hello.", "Name a colour.", "Count to three."]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    args = ("--model", str(tiny_model_dir), "--served-model-name", MODEL, "--api-key", KEY)
    with running_server(*args, "--max-model-len", "256", log=log) as url:
        yield url


Answer = tuple[str, int, int]


def official(base: str, messages: list[dict[str, str]]) -> Answer:
    """The official client's greedy answer: text, prompt tokens, completion tokens."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.usage is not None
    text = reply.choices[0].message.content or ""
    return text, reply.usage.prompt_tokens, reply.usage.completion_tokens


@pytest.fixture(scope="module")
def expected(base: str) -> dict[str, Answer]:
    answers = {q: official(base, [{"role": "user", "content": q}]) for q in QUESTIONS}
    assert any(text for text, _, _ in answers.values()), answers
    return answers


@pytest.fixture
def chat(base: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=f"{base}/v1",
        api_key=KEY,
        temperature=0,
        max_tokens=MAX_TOKENS,
        max_retries=0,
        stream_usage=True,
    )


def test_invoke_returns_the_answer_and_usage(
    base: str, chat: ChatOpenAI, expected: dict[str, Answer]
) -> None:
    question = QUESTIONS[0]
    message = chat.invoke([HumanMessage(question)])
    text, prompt_tokens, completion_tokens = expected[question]
    assert message.content == text
    assert message.usage_metadata["input_tokens"] == prompt_tokens
    assert message.usage_metadata["output_tokens"] == completion_tokens
    assert message.response_metadata["finish_reason"] in {"stop", "length"}
    assert message.response_metadata["model_name"] == MODEL
    # A system turn reaches the chat template as the official client's does.
    with_system = chat.invoke([SystemMessage("Be brief."), HumanMessage(question)])
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    text, prompt_tokens, _ = official(base, system)
    assert (with_system.content, with_system.usage_metadata["input_tokens"]) == (
        text,
        prompt_tokens,
    )


def test_stream_yields_chunks_that_add_up_to_the_answer(
    chat: ChatOpenAI, expected: dict[str, Answer]
) -> None:
    question = QUESTIONS[1]
    chunks = list(chat.stream(question))
    text, prompt_tokens, completion_tokens = expected[question]
    assert len([c for c in chunks if c.content]) > 1  # it streamed, not one final chunk
    assert "".join(str(c.content) for c in chunks) == text
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata["input_tokens"] == prompt_tokens
    assert total.usage_metadata["output_tokens"] == completion_tokens


def test_batch_answers_each_input_in_order(chat: ChatOpenAI, expected: dict[str, Answer]) -> None:
    replies = chat.batch(QUESTIONS, config={"max_concurrency": 3})
    assert [reply.content for reply in replies] == [expected[q][0] for q in QUESTIONS]


def test_litellm_completion_through_the_openai_provider(
    base: str, expected: dict[str, Answer]
) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    import litellm

    question = QUESTIONS[2]
    kwargs = {
        "model": f"openai/{MODEL}",
        "api_base": f"{base}/v1",
        "api_key": KEY,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    reply = litellm.completion(**kwargs)
    text, prompt_tokens, completion_tokens = expected[question]
    assert reply.choices[0].message.content == text
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        prompt_tokens,
        completion_tokens,
    )
    streamed = litellm.completion(**kwargs, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == text
