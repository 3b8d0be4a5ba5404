"""Tool calling and structured outputs with real clients against a real server, on both engines.

The embedded SmolLM2-135M (whose chat template has no tool support, so the hermes fallback
block teaches it) is served by `largeforge serve` with the transformers engine and with the vLLM
engine (from `.venv-vllm`). The official SDK, LangChain, LiteLLM, instructor and the OpenAI
Agents SDK each get what they parse: calls whose arguments validate against the tool's
parameters, JSON that validates against the requested schema, streamed tool-call deltas that
join to the unstreamed answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tests.e2e.server import running_server
from tests.e2e.vllm_env import START_TIMEOUT, vllm_python
from tests.json_schemas import json_schemas

pytestmark = pytest.mark.slow
KEY = "sk-tools"
MODEL = "smollm2-135m-instruct"
ENGINES = ["transformers", "vllm"]

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 32}},
            "required": ["zone"],
        },
    },
}
PARAMETERS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME["function"]["parameters"]}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "languages": {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}


class Weather(BaseModel):
    """The weather asked about."""

    city: Annotated[str, Field(max_length=24)]
    unit: Literal["celsius", "fahrenheit"]


@pytest.fixture(scope="module", params=ENGINES)
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    vllm = request.param == "vllm"
    python, timeout = (vllm_python(), START_TIMEOUT) if vllm else (sys.executable, 300.0)
    log = tmp_path_factory.mktemp("serve") / f"{request.param}.log"
    args = ("--model", MODEL, "--api-key", KEY, "--backend", request.param)
    args += ("--max-model-len", "2048", "--max-num-seqs", "16")
    with running_server(*args, log=log, timeout=timeout, python=python) as url:
        yield url


@pytest.fixture
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=300)


def valid_calls(calls: Any) -> list[tuple[str, dict[str, Any]]]:
    """Each call's name and decoded arguments, checked against its tool's parameters."""
    assert calls, "no tool calls"
    out = []
    for call in calls:
        assert call.type == "function"
        assert call.id
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, PARAMETERS[call.function.name])
        out.append((call.function.name, arguments))
    return out


def no_call_syntax(text: str | None) -> None:
    assert "<tool_call>" not in (text or "")
    assert "</tool_call>" not in (text or "")


# -- the official SDK -------------------------------------------------------------------------


def test_forced_function_gives_a_valid_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=96,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = valid_calls(choice.message.tool_calls)
    assert {name for name, _ in calls} == {"get_weather"}
    no_call_syntax(choice.message.content)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_gives_valid_calls_when_sampling(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=1.0,
        seed=seed,
        max_tokens=200,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = valid_calls(choice.message.tool_calls)
    assert len({c.id for c in choice.message.tool_calls or []}) == len(calls)
    no_call_syntax(choice.message.content)


def test_parallel_false_allows_one_call(client: openai.OpenAI) -> None:
    for seed in (4, 5):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Paris and in Rome, and the time?"}],
            tools=[WEATHER, TIME],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        assert len(valid_calls(reply.choices[0].message.tool_calls)) == 1


def test_auto_answers_in_text_or_with_valid_calls_and_none_never_calls(
    client: openai.OpenAI,
) -> None:
    for seed in (6, 7, 8):
        reply = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto", temperature=1.0,
            seed=seed, max_tokens=96,
        )  # fmt: skip
        message = reply.choices[0].message
        no_call_syntax(message.content)
        if message.tool_calls:
            valid_calls(message.tool_calls)
            assert reply.choices[0].finish_reason == "tool_calls"
        else:
            assert message.content
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", temperature=0,
        max_tokens=48,
    )  # fmt: skip
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0,
        max_tokens=96,
    )  # fmt: skip
    message = first.choices[0].message
    calls = valid_calls(message.tool_calls)
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}
        for call in message.tool_calls or []
    ]
    history: list[Any] = [*ASK, message.model_dump(exclude_none=True), *results]
    final = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], temperature=0, max_tokens=48,
        tool_choice="none",
    )  # fmt: skip
    assert final.choices[0].message.content
    assert final.choices[0].message.tool_calls is None
    alone = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert final.usage is not None
    assert alone.usage is not None
    # the call and its result are in the prompt (tool_choice none shows no tools block)
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 15
    assert all(name == "get_weather" and "city" in arguments for name, arguments in calls)


def streamed(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[dict[str, str]], list[Any]]:
    """Content, calls (id, name, arguments) and finish reasons joined from a stream."""
    content: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            for piece in choice.delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                if piece.id:
                    assert not call["id"], "a call's id is sent once"
                    call["id"] = piece.id
                    assert piece.function is not None
                    call["name"] = piece.function.name or ""
                elif piece.function is not None:
                    assert piece.function.name is None, "the name comes with the id only"
                if piece.function is not None:
                    call["arguments"] += piece.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return "".join(content), [calls[i] for i in sorted(calls)], finishes


def test_streamed_tool_calls_equal_the_unstreamed_ones(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL, "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required",
        "temperature": 0, "max_tokens": 120,
    }  # fmt: skip
    plain = client.chat.completions.create(**kwargs).choices[0]
    content, calls, finishes = streamed(client, **kwargs)
    no_call_syntax(content)
    assert content.strip() == (plain.message.content or "").strip()
    expected = [(c.function.name, c.function.arguments) for c in plain.message.tool_calls or []]
    assert [(c["name"], c["arguments"]) for c in calls] == expected
    assert finishes == [plain.finish_reason] == ["tool_calls"]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"response_format": {"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON, "strict": True}}},
    ],
    ids=["text", "json_schema"],
)  # fmt: skip
def test_streamed_text_and_json_equal_the_unstreamed(
    client: openai.OpenAI, extra: dict[str, Any]
) -> None:
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Describe a person."}],
              "temperature": 0, "max_tokens": 80} | extra  # fmt: skip
    plain = client.chat.completions.create(**kwargs).choices[0]
    content, calls, finishes = streamed(client, **kwargs)
    assert content == plain.message.content
    assert calls == []
    assert finishes == [plain.finish_reason]


def test_json_object_and_strict_json_schema_answers_parse_and_validate(
    client: openai.OpenAI,
) -> None:
    ask = [{"role": "user", "content": "Invent a person who speaks two languages, as JSON."}]
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model=MODEL, messages=ask, response_format={"type": "json_object"},
            temperature=1.0, seed=seed, max_tokens=160,
        )  # fmt: skip
        if reply.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
        reply = client.chat.completions.create(
            model=MODEL, messages=ask, temperature=1.0, seed=seed, max_tokens=200,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        )  # fmt: skip
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON)


BAD_REF = {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}


def test_bad_tools_and_schemas_are_400s_naming_the_param(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
         "tools.0.function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "wizard"}}}}}},
         "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": BAD_REF}}],
          "tool_choice": "required"}, "tools"),
    ]  # fmt: skip
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **extra)
        body = info.value.body
        assert isinstance(body, dict)
        assert body.get("param") == param, (extra, body)
    assert client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2).choices


# -- LangChain, LiteLLM, instructor, the Agents SDK --------------------------------------------


def get_weather(city: str, unit: str) -> str:
    """Get the current weather in a city (unit: celsius or fahrenheit)."""
    return f"21 degrees {unit} in {city}"


def test_langchain_bind_tools_and_structured_output(base: str) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model=MODEL, base_url=f"{base}/v1", api_key=KEY, temperature=0, max_tokens=96,  # type: ignore[arg-type]
        max_retries=0,
    )  # fmt: skip
    weather_tool = tool(get_weather)
    message = chat.bind_tools([weather_tool], tool_choice="get_weather").invoke(ASK[0]["content"])
    calls = message.tool_calls  # type: ignore[attr-defined]
    assert calls
    for call in calls:
        assert call["name"] == "get_weather"
        assert set(call["args"]) == {"city", "unit"}
        assert weather_tool.invoke(call["args"])
    single = chat.bind_tools([weather_tool], tool_choice="any", parallel_tool_calls=False)
    (call,) = single.invoke(ASK[0]["content"]).tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather"
    for method in ("function_calling", "json_schema"):
        structured = chat.with_structured_output(Weather, method=method)  # type: ignore[arg-type]
        answer = structured.invoke("The weather in Rome, in celsius.")
        assert isinstance(answer, Weather), (method, answer)


def test_litellm_function_calling(base: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    import litellm

    reply = litellm.completion(
        model=f"openai/{MODEL}", api_base=f"{base}/v1", api_key=KEY, messages=ASK,
        tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=96,
    )  # fmt: skip
    message = reply.choices[0].message  # type: ignore[union-attr]
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)


def test_instructor_json_schema_mode(base: str) -> None:
    import instructor

    client = instructor.from_openai(
        openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0),
        mode=instructor.Mode.JSON_SCHEMA,
    )
    for seed in (1, 2):
        weather = client.chat.completions.create(
            model=MODEL, response_model=Weather, max_retries=0, temperature=1.0, seed=seed,
            max_tokens=96, messages=[{"role": "user", "content": "Weather in Oslo, celsius?"}],
        )  # fmt: skip
        assert isinstance(weather, Weather)


def test_agents_sdk_runs_a_required_tool_loop_to_the_end(base: str) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    seen: list[dict[str, str]] = []

    @function_tool
    def weather(city: str, unit: str) -> str:
        """Get the current weather in a city (unit: celsius or fahrenheit)."""
        seen.append({"city": city, "unit": unit})
        return f"21 degrees {unit} in {city}"

    model = OpenAIChatCompletionsModel(
        model=MODEL, openai_client=openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY)
    )
    agent = Agent(
        name="weather",
        instructions="You answer questions about the weather with the weather tool.",
        tools=[weather],
        model=model,
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=96),
    )
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=6))
    assert seen, "the tool was never called"
    assert result.final_output


# -- every constrained answer parses and validates ----------------------------------------------

SCHEMAS = 100
SEEDS = (11, 12, 13)


async def _constrained(
    http: openai.AsyncOpenAI, limit: asyncio.Semaphore, index: int, schema: dict[str, Any]
) -> list[str]:
    """Ask for `schema` as a json_schema answer and as a forced tool's parameters; the
    problems found (none when both answers parse and validate)."""
    seed = SEEDS[index % len(SEEDS)]
    common: dict[str, Any] = {
        "model": MODEL, "temperature": 1.0, "seed": seed, "max_tokens": 300,
        "messages": [{"role": "user", "content": "Fill in an example record."}],
    }  # fmt: skip
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "record", "schema": schema, "strict": True},
    }
    tool = {"type": "function", "function": {"name": "save", "parameters": schema}}
    problems = []
    async with limit:
        reply = await http.chat.completions.create(**common, response_format=fmt)
        try:
            jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            problems.append(f"json_schema #{index} seed {seed}: {exc!s:.300} in {reply!s:.400}")
    async with limit:
        reply = await http.chat.completions.create(
            **common,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "save"}},
            parallel_tool_calls=False,
        )
        try:
            (call,) = reply.choices[0].message.tool_calls or []
            jsonschema.validate(json.loads(call.function.arguments), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            problems.append(f"tool #{index} seed {seed}: {exc!s:.300} in {reply!s:.400}")
    return problems


@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(schemas=st.lists(json_schemas(max_depth=2), min_size=SCHEMAS, max_size=SCHEMAS))
def test_generated_schemas_always_give_answers_that_parse_and_validate(
    base: str, schemas: list[dict[str, Any]]
) -> None:
    """100 generated schemas, each as json_schema and as a forced tool, at temperature 1 with
    three seeds: 0 answers that fail to parse or validate."""

    async def run() -> list[str]:
        http = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=600)
        limit = asyncio.Semaphore(16)
        found = await asyncio.gather(
            *(_constrained(http, limit, i, s) for i, s in enumerate(schemas))
        )
        await http.close()
        return [problem for problems in found for problem in problems]

    problems = asyncio.run(run())
    assert problems == [], f"{len(problems)} of {2 * len(schemas)} answers failed: {problems[:5]}"
