"""End to end, as a person does it: train with the CLI, serve the result, call it with openai."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.server import cli_env, largeforge, running_server

pytestmark = pytest.mark.slow
KEY = "sk-e2e"


def test_cli_training_then_serving_with_the_openai_client(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\n"
        "name: e2e\n"
        "lora: {rank: 4, alpha: 8}\n"
        "training: {max_steps: 4, batch_size: 4, learning_rate: 0.005, logging_steps: 1,"
        " warmup_steps: 0, max_length: 256}\n"
    )
    result = subprocess.run(
        largeforge("run-training", str(config), "--output", str(tmp_path / "runs")),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "e2e"
    merged = run_dir / "merged"
    assert f"largeforge serve --model {merged}" in result.stdout
    assert "training" in result.stderr  # the progress bar

    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "succeeded"
    assert run["result"]["steps"] == 4
    assert run["result"]["eval_loss_after"] < run["result"]["eval_loss_before"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert all("learning_rate" in m for m in metrics if "loss" in m)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (merged / "model.safetensors").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert (tmp_path / "runs" / "latest").resolve() == run_dir.resolve()

    remerged = tmp_path / "remerged"
    merge = subprocess.run(
        largeforge("merge", str(run_dir), "-o", str(remerged), "--tolerance", "1e-4"),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
    )
    assert merge.returncode == 0, merge.stderr[-2000:]
    assert "max |logit difference| vs base + adapter:" in merge.stdout
    assert (remerged / "model.safetensors").is_file()
    assert (remerged / "chat_template.jinja").read_text() == (
        merged / "chat_template.jinja"
    ).read_text()

    with running_server(
        "--model",
        str(merged),
        "--served-model-name",
        "tiny",
        "--api-key",
        KEY,
        log=tmp_path / "server.log",
    ) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        messages = [{"role": "user", "content": "What does the Python `len` builtin do?"}]
        reply = client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        choice = reply.choices[0]
        assert choice.message.role == "assistant"
        assert choice.finish_reason in {"stop", "length"}
        assert reply.usage is not None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(merged)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompt_ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        assert reply.usage.prompt_tokens == len(prompt_ids)
        assert 1 <= reply.usage.completion_tokens <= 8
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

        anonymous = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            anonymous.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
        assert info.value.status_code == 401
        no_key = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "tiny", "messages": messages}
        )
        assert no_key.status_code == 401
        assert set(no_key.json()["error"]) == {"message", "type", "param", "code"}
        assert httpx.get(f"{base}/health").status_code == 200

    # The adapter served beside its base model answers as the merged model does.
    with running_server(
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        "tiny",
        "--lora",
        f"tuned={run_dir / 'adapter'}",
        log=tmp_path / "server-lora.log",
    ) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "tuned"]
        tuned = client.chat.completions.create(
            model="tuned",
            messages=messages,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        assert tuned.choices[0].message.content == choice.message.content
