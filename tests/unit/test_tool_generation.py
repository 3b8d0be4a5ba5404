"""Synthetic tool-use data over a fake engine answering in the hermes format: rows in the OpenAI
shape, the forced call under the tool's grammar, the no-call share, every rejection counted by
reason, the same rows for the same seed, and `data generate tools` in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from structlog.testing import capture_logs

from largeforge.adapters.tools import tool_call_format
from largeforge.application.tool_generation import (
    GenerateToolData,
    ToolConversation,
    read_tools,
)
from largeforge.config import Settings
from largeforge.container import Container
from largeforge.domain.errors import ConfigError, DatasetError
from largeforge.domain.generation import FinishReason, SamplingParams, TokenStep
from largeforge.domain.schema_check import check_instance
from largeforge.domain.tools import ToolChoice, ToolChoiceMode
from largeforge.entrypoints.cli import generate_tools as generate_tools_cli
from largeforge.entrypoints.cli.main import main
from tests.eval_fakes import chunks
from tests.fakes import FakeInferenceEngine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
TOOLS = read_tools([WEATHER, TIME], "tools.json")
VALID = {"get_weather": {"city": "Paris", "unit": "celsius"}, "get_time": {"timezone": "UTC"}}
ASKS_FOR_A_REQUEST = "Reply with the request only"

Reply = Callable[[str, SamplingParams], str]


def call(name: str, arguments: dict[str, Any]) -> str:
    """A hermes call as a model writes it."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


class ToolEngine(FakeInferenceEngine):
    """Answers each prompt with `reply(prompt words, params)`, streamed in 3-character tokens;
    keeps every prompt and its sampling parameters (`rendered_tools`: the tools each saw)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__("scripted", context_window=4096)
        self.reply = reply
        self.piece_size = 3
        self.prompts: list[str] = []
        self.sampled: list[SamplingParams] = []

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        prompt = " ".join(self._word(t) for t in prompt_ids)
        self.prompts.append(prompt)
        self.sampled.append(params)
        budget = params.max_tokens or 1
        for n, piece in enumerate(chunks(self.reply(prompt, params), self.piece_size), start=1):
            if n == budget:  # no room left for the end-of-sequence step
                yield TokenStep(self._id(piece), piece, None, FinishReason.LENGTH)
                return
            yield TokenStep(self._id(piece), piece, None, None)
        yield TokenStep(0, "", None, FinishReason.STOP)


def scripted(*replies: str) -> ToolEngine:
    """An engine answering with `replies`, in order."""
    queue = list(replies)
    return ToolEngine(lambda prompt, params: queue.pop(0))


def obliging(prompt: str, params: SamplingParams) -> str:
    """A model that writes a request naming the tool it was shown (with a number from its
    seed), answers a forced call validly and a tool-less request in text."""
    if ASKS_FOR_A_REQUEST in prompt:
        tool = next((n for n in VALID if f"name: {n}" in prompt), "nothing")
        return f"Please use {tool} for case {params.seed}"
    if params.constraint is None:
        return f"Here is an answer ({params.seed})."
    name = next(n for n in VALID if n in prompt)
    return call(name, VALID[name])


def generate(engine: ToolEngine, count: int, tools: Sequence[Any] = TOOLS, **options: Any) -> Any:
    max_attempts = options.pop("max_attempts", None)
    generator = GenerateToolData(engine, tool_call_format, **options)
    specs = read_tools(list(tools), "tools.json") if isinstance(tools[0], dict) else tools
    return asyncio.run(generator.execute(specs, count, max_attempts=max_attempts))


def test_rows_are_openai_messages_with_every_tool_and_one_valid_forced_call() -> None:
    engine = ToolEngine(obliging)
    progress: list[int] = []
    generator = GenerateToolData(engine, tool_call_format, no_call_share=0.25, seed=3)
    result = asyncio.run(generator.execute(TOOLS, 4, progress=progress.append))
    assert progress == [1, 1, 1, 1]
    assert result.attempts == 4
    assert not result.rejected
    rows = [record.as_row() for record in result.records]
    assert all(row["tools"] == [WEATHER, TIME] for row in rows)  # all tools, as given
    called = [row for row in rows if "tool_calls" in row["messages"][1]]
    assert len(called) == 3
    assert sorted(r["messages"][1]["tool_calls"][0]["function"]["name"] for r in called) == [
        "get_time",
        "get_weather",
        "get_weather",
    ]  # round-robin over the tools
    for number, row in enumerate(rows):
        user, assistant = row["messages"]
        assert user["role"] == "user"
        assert user["content"].startswith("Please use")
        assert assistant["role"] == "assistant"
        if "tool_calls" not in assistant:
            assert assistant["content"].startswith("Here is an answer")
            continue
        assert assistant["content"] is None
        (made,) = assistant["tool_calls"]
        assert made["id"] == f"call_{number}"
        assert made["type"] == "function"
        function = made["function"]
        assert isinstance(function["arguments"], str)
        arguments = json.loads(function["arguments"])
        assert arguments == VALID[function["name"]]
        assert f"Please use {function['name']} " in user["content"]  # the request it answers
        schema = next(t for t in TOOLS if t.name == function["name"]).parameters
        assert check_instance(arguments, schema) is None
    json.dumps(rows)  # plain JSON


def test_the_request_prompt_shows_the_tool_and_earlier_requests_to_vary_from() -> None:
    engine = ToolEngine(obliging)
    generate(engine, 3, [WEATHER], no_call_share=0.0)
    asked = [p for p in engine.prompts if ASKS_FOR_A_REQUEST in p]
    assert len(asked) == 3
    for words in ("get_weather", "Current weather in a city", "city (string, required):",
                  "The city's name", '"celsius", "fahrenheit"'):  # fmt: skip
        assert " ".join(words.split()) in asked[0], words
    assert "already written" not in asked[0]
    assert "already written" in asked[1]
    assert "Please use get_weather" in asked[1]
    assert asked[2].count("- Please use get_weather") == 2  # two examples at most


def test_calls_are_forced_to_the_target_function_with_every_tool_offered() -> None:
    engine = ToolEngine(obliging)
    result = generate(engine, 4, no_call_share=0.0)
    hermes = tool_call_format("hermes")
    answers = [(p, s) for p, s in zip(engine.prompts, engine.sampled, strict=True)
               if ASKS_FOR_A_REQUEST not in p]  # fmt: skip
    assert len(answers) == 4
    for record, (_, params) in zip(result.records, answers, strict=True):
        forced = ToolChoice(ToolChoiceMode.FUNCTION, record.call.name)
        assert params.constraint == hermes.constraint(TOOLS, forced, False)
    assert ("get_weather", "get_time") in engine.rendered_tools


def test_a_share_of_requests_need_no_tool_and_are_answered_in_text() -> None:
    engine = ToolEngine(obliging)
    result = generate(engine, 10, no_call_share=0.3)
    texts = [r for r in result.records if r.call is None]
    assert len(texts) == 3
    assert len(result.records) == 10
    no_tool_prompts = [p for p in engine.prompts if "needs none of them" in p]
    assert len(no_tool_prompts) == 3
    assert all("get_weather: Current weather in a city" in p for p in no_tool_prompts)
    assert sum(1 for s in engine.sampled if s.constraint is None) == 10 + 3  # requests, texts
    for record in texts:
        row = record.as_row()
        assert row["tools"] == [WEATHER, TIME]  # still offered in the row
        assert row["messages"][1] == {"role": "assistant", "content": record.answer}
    offered = [names for names in engine.rendered_tools if names]
    assert offered == [("get_weather", "get_time")] * 7  # tools rendered only for the calls
    assert all(r.call is None for r in generate(ToolEngine(obliging), 3, no_call_share=1).records)
    assert all(r.call for r in generate(ToolEngine(obliging), 3, no_call_share=0).records)
    with pytest.raises(ConfigError, match="no_call_share"):
        GenerateToolData(engine, tool_call_format, no_call_share=1.5)


def test_calls_that_break_the_schema_or_miss_the_target_are_rejected_by_reason() -> None:
    engine = scripted(
        "   ",  # an empty request
        "Weather in Paris?",
        call("get_weather", {"city": 3}),  # arguments that violate the schema
        "Weather in Rome?",
        call("get_time", {"timezone": "UTC"}),  # another function than the one forced
        "Weather in Oslo?",
        "It is sunny.",  # no call at all
        "x" * 601,  # too long a request
        "Weather in Bern?",
        call("get_weather", {"city": "Bern"}),
    )
    engine.piece_size = 20  # a 600-character request fits the request budget
    with capture_logs() as logs:
        result = generate(engine, 1, [WEATHER, TIME], no_call_share=0.0, max_attempts=10)
    assert [r.call.arguments for r in result.records] == ['{"city": "Bern"}']
    assert result.rejected == {
        "empty_request": 1,
        "invalid_arguments": 1,
        "wrong_function": 1,
        "no_call": 1,
        "too_long": 1,
    }
    assert result.attempts == 6
    reasons = [e for e in logs if e["event"] == "tool_call_rejected"]
    assert reasons[0]["reason"] == "invalid_arguments"
    assert reasons[0]["detail"] == "$.city: expected string, got integer"


def test_duplicates_and_budget_cut_calls_are_counted_and_attempts_are_bounded() -> None:
    engine = scripted(
        "Weather in Paris?",
        call("get_weather", {"city": "Paris"}),
        "weather in  PARIS?",  # the same request again
        "Weather in Lima?",
        call("get_weather", {"city": "Lima"}),
    )
    result = generate(engine, 3, [WEATHER], no_call_share=0.0, max_attempts=3)
    assert len(result.records) == 2
    assert result.attempts == 3
    assert result.rejected == {"duplicate": 1}
    cut = scripted("Weather in Oslo?", call("get_weather", {"city": "Oslo"}))
    result = generate(cut, 1, [WEATHER], max_tokens=4, max_attempts=1)
    assert result.rejected == {"truncated_call": 1}
    assert not result.records


def test_the_same_seed_writes_the_same_rows() -> None:
    def rows(seed: int) -> list[dict[str, Any]]:
        result = generate(ToolEngine(obliging), 6, no_call_share=0.5, seed=seed)
        return [record.as_row() for record in result.records]

    assert rows(7) == rows(7)
    assert rows(7) != rows(8)


def test_a_schema_the_grammar_engine_refuses_fails_before_anything_is_generated() -> None:
    engine = ToolEngine(obliging)
    engine.refuse_constraints = True
    with pytest.raises(ConfigError, match="tool 'get_weather'"):
        generate(engine, 2)
    assert engine.prompts == []


def test_tools_files_are_a_list_or_an_object_and_bad_ones_are_named() -> None:
    assert read_tools({"tools": [WEATHER]}, "t.json") == read_tools([WEATHER], "t.json")
    bad = json.loads(json.dumps(WEATHER))
    bad["function"]["parameters"]["properties"]["city"]["frobnicate"] = 1
    with pytest.raises(DatasetError, match=r"^t\.json: tools\[0\]\.function\.parameters: .*frob"):
        read_tools([bad], "t.json")
    with pytest.raises(DatasetError, match=r"^t\.json: expected a JSON list"):
        read_tools("get_weather", "t.json")
    with pytest.raises(DatasetError, match="non-empty list"):
        read_tools({"tools": []}, "t.json")
    assert ToolConversation(TOOLS, "hi", None, "hello").as_row()["messages"][1] == {
        "role": "assistant",
        "content": "hello",
    }


# ---------- the command, in process over a fake engine ----------


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[ToolEngine]:
    made: list[ToolEngine] = []

    def container() -> Container:
        built = Container.from_settings(Settings())

        def make(model: str) -> ToolEngine:
            made.append(ToolEngine(obliging))
            return made[-1]

        built.generation_engine.override(providers.Callable(make))
        return built

    monkeypatch.setattr(generate_tools_cli, "_container", container)
    return made


def test_the_command_writes_rows_and_says_how_many(
    tmp_path: Path, engines: list[ToolEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"tools": [WEATHER, TIME]}))
    out = tmp_path / "out.jsonl"
    args = ["data", "generate", "tools", "--tools", str(tools), "-o", str(out), "--count", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote 5 tool rows to {out}" in printed
    assert "4 with a tool call, 1 answered in text" in printed
    assert engines[0].closed
    first = out.read_text()
    assert len(first.splitlines()) == 5
    assert main(args) == 0
    assert out.read_text() == first  # same seed, same file


def test_the_command_exits_1_with_the_reasons_when_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def container() -> Container:
        built = Container.from_settings(Settings())
        built.generation_engine.override(
            providers.Callable(lambda model: ToolEngine(lambda p, s: "Same request"))
        )
        return built

    monkeypatch.setattr(generate_tools_cli, "_container", container)
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    out = tmp_path / "out.jsonl"
    code = main(["data", "generate", "tools", "--tools", str(tools), "-o", str(out),
                 "--count", "2", "--no-call-share", "0"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "no tool rows kept: all 8 candidates were rejected (no_call 8)" in captured.err
