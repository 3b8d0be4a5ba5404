"""The real embedded SmolLM2-135M-Instruct, served and asked with the official openai client."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow


def test_embedded_model_answers_a_chat_request(tmp_path: Path) -> None:
    with running_server("--model", "smollm2-135m-instruct", log=tmp_path / "server.log") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
            temperature=0,
        )
        text = reply.choices[0].message.content or ""
        assert text.strip()
        assert "<|im_end|>" not in text
        assert "<|im_start|>" not in text
        assert reply.usage is not None
        assert reply.usage.prompt_tokens > 10
        assert reply.usage.completion_tokens <= 24
        if reply.choices[0].finish_reason == "length":
            assert reply.usage.completion_tokens == 24

        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=9000,
            )
        assert "maximum context length is 8192" in str(info.value)
