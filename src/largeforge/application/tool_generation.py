"""Synthetic tool-use data: user requests written by a model, answered with calls it cannot get
wrong.

For each conversation a target is picked (a tool, or none for a share of them; balanced and
shuffled by the seed). The model first writes, in plain text, one realistic user request that
needs that tool (it is shown the tool's name, description and parameters, and one or two of the
requests already written for it, to vary from); then it answers that request with every tool
offered and `tool_choice` forcing the target function, through `TextGeneration` as the server
answers, so the tool-call grammar constrains the call's JSON to the function's schema. Requests
that need no tool are answered in text with `tool_choice` `none`. Every call is still checked
(the function named, its arguments valid for the schema) and a failure is counted by reason,
like every other rejection; none is dropped silently.

A kept conversation becomes an OpenAI-messages row: the tools offered, the user turn, and the
assistant turn (a call with `content` null, or the text answer). Same seed, same rows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from largeforge.application.generation import GenerationResult, Progress, clean_task
from largeforge.application.ports import InferenceEngine
from largeforge.application.serving import TextGeneration, ToolFormats, chat_once
from largeforge.application.tool_replies import check_output, output_constraint
from largeforge.application.tool_rows import parse_tools
from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import ConfigError, DatasetError, InvalidRequestError
from largeforge.domain.formats import RowError
from largeforge.domain.generation import ChatRequest, Choice, FinishReason, SamplingParams
from largeforge.domain.schema_check import check_instance
from largeforge.domain.text import clean_text, normalized_key
from largeforge.domain.tools import ToolCall, ToolChoice, ToolChoiceMode, ToolSpec

log = structlog.get_logger(__name__)

REQUEST_TOKENS = 64
"""Tokens the model may take to write a request (it is asked for one line)."""

MAX_REQUEST_CHARS = 600
"""A longer request is rejected as `too_long`."""

EXAMPLES_SHOWN = 2
"""Requests already written for the same target shown as examples to vary from."""

CALL_REQUEST_PROMPT = (
    "An assistant can call this function:\n{tool}\n{examples}"
    "Write one realistic request a user might send to the assistant that needs this function, "
    "stating the values it needs in plain words. "
    "Reply with the request only, on one line."
)
NO_CALL_REQUEST_PROMPT = (
    "An assistant can call these functions:\n{tools}\n{examples}"
    "Write one realistic request a user might send to the assistant that needs none of them: "
    "a question or task it answers from its own knowledge. "
    "Reply with the request only, on one line."
)


@dataclass(frozen=True, slots=True)
class ToolConversation:
    """One generated conversation: the tools offered, the user's request, and the answer (a
    call of one of the tools, or text when no tool is needed)."""

    tools: tuple[ToolSpec, ...]
    request: str
    call: ToolCall | None = None
    answer: str = ""

    def as_row(self) -> dict[str, Any]:
        """The OpenAI-messages row: `tools`, the user turn, the assistant turn (`content` null
        beside a call, whose `arguments` are JSON text)."""
        assistant: dict[str, Any] = {"role": "assistant", "content": self.answer or None}
        if self.call is not None:
            function = {"name": self.call.name, "arguments": self.call.arguments}
            assistant["tool_calls"] = [
                {"id": self.call.id, "type": "function", "function": function}
            ]
        return {
            "tools": [tool_dict(tool) for tool in self.tools],
            "messages": [{"role": "user", "content": self.request}, assistant],
        }


def tool_dict(tool: ToolSpec) -> dict[str, Any]:
    """A tool in the OpenAI shape, `strict` kept when set."""
    data = tool.as_dict()
    if tool.strict:
        data["function"]["strict"] = True
    return data


def read_tools(value: Any, source: str) -> tuple[ToolSpec, ...]:
    """The tools of a decoded tools file: a list of OpenAI function tools, or `{"tools": [...]}`;
    a `DatasetError` naming `source`, the field and the reason otherwise."""
    if isinstance(value, Mapping) and "tools" in value:
        value = value["tools"]
    elif not isinstance(value, list):
        raise DatasetError(
            f'{source}: expected a JSON list of tools or an object {{"tools": [...]}}'
        )
    try:
        return parse_tools(value)
    except RowError as error:
        where = f"{error.field}: " if error.field else ""
        raise DatasetError(f"{source}: {where}{error.reason}") from None


def describe_tool(tool: ToolSpec) -> str:
    """The tool for a prompt: name, description, and each parameter with its type, whether it
    is required, its description and its allowed values."""
    lines = [f"name: {tool.name}"]
    if tool.description:
        lines.append(f"description: {tool.description}")
    properties = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or ())
    if properties:
        lines.append("parameters:")
    for name, schema in properties.items():
        schema = schema if isinstance(schema, Mapping) else {}
        facts = [str(schema["type"])] if isinstance(schema.get("type"), str) else []
        if name in required:
            facts.append("required")
        line = f"- {name}" + (f" ({', '.join(facts)})" if facts else "")
        if isinstance(schema.get("description"), str) and schema["description"]:
            line += f": {schema['description']}"
        if isinstance(schema.get("enum"), list):
            line += f"; one of {', '.join(json.dumps(v) for v in schema['enum'])}"
        lines.append(line)
    return "\n".join(lines)


def plan_targets(
    tools: Sequence[ToolSpec], count: int, no_call_share: float, rng: random.Random
) -> list[ToolSpec | None]:
    """`count` targets: `round(count * no_call_share)` with no tool (None), the rest the tools
    in turn, all shuffled by `rng`."""
    no_call = round(count * no_call_share)
    targets: list[ToolSpec | None] = [None] * no_call
    targets += [tools[i % len(tools)] for i in range(count - no_call)]
    rng.shuffle(targets)
    return targets


class GenerateToolData:
    """Tool-use conversations: a request written for a target tool, answered with that tool's
    call under the grammar (or in text for requests that need no tool). See the module doc.

    `tool_formats` maps a format name to its `ToolCallFormat` (the container's registry);
    `tool_call_parser` overrides the format the model's template implies, as `serve` does.
    """

    def __init__(
        self,
        engine: InferenceEngine,
        tool_formats: ToolFormats,
        *,
        tool_call_parser: str | None = None,
        no_call_share: float = 0.2,
        temperature: float = 0.9,
        max_tokens: int = 256,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= no_call_share <= 1.0:
            raise ConfigError(f"no_call_share must be between 0 and 1, got {no_call_share}")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")
        self._engine = engine
        self._tool_formats = tool_formats
        self._parser = tool_call_parser
        self._generation = TextGeneration(
            [engine], tool_formats=tool_formats, tool_call_parser=tool_call_parser
        )
        self._no_call_share = no_call_share
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._rng = random.Random(seed)

    async def execute(
        self,
        tools: Sequence[ToolSpec],
        count: int,
        *,
        max_attempts: int | None = None,
        progress: Progress | None = None,
    ) -> GenerationResult[ToolConversation]:
        """Up to `count` conversations in at most `max_attempts` tries (default 4 each)."""
        if count < 1:
            raise ConfigError(f"count must be at least 1, got {count}")
        tools = tuple(tools)
        if not tools:
            raise DatasetError("no tools to generate calls of")
        self._check_tools(tools)
        targets = plan_targets(tools, count, self._no_call_share, self._rng)
        written: dict[str | None, list[str]] = {}
        seen: set[str] = set()
        result: GenerationResult[ToolConversation] = GenerationResult()
        limit = max_attempts if max_attempts is not None else count * 4
        while len(result.records) < count and result.attempts < limit:
            result.attempts += 1
            target = targets[len(result.records)]
            name = target.name if target else None
            request = await self._request(tools, target, written.get(name, []))
            key = normalized_key(request)
            if not request:
                result.rejected["empty_request"] += 1
                continue
            if len(request) > MAX_REQUEST_CHARS:
                result.rejected["too_long"] += 1
                continue
            if key in seen:
                result.rejected["duplicate"] += 1
                continue
            number = len(result.records)
            answered = (
                await self._call(tools, target, request, number)
                if target is not None
                else await self._text(tools, request)
            )
            if isinstance(answered, str):
                result.rejected[answered] += 1
                continue
            seen.add(key)
            written.setdefault(name, []).append(request)
            result.records.append(answered)
            if progress:
                progress(1)
        log.info(
            "tool_data_generated",
            kept=len(result.records),
            calls=sum(1 for r in result.records if r.call is not None),
            attempts=result.attempts,
            rejected=dict(result.rejected),
        )
        return result

    def _check_tools(self, tools: tuple[ToolSpec, ...]) -> None:
        """Compile each tool's forced-call grammar before anything is generated: a schema the
        grammar engine refuses is a `ConfigError` naming the tool."""
        tool_format = self._tool_formats(self._parser or self._engine.tool_format)
        probe = (Message(Role.USER, "?"),)
        for tool in tools:
            request = ChatRequest(
                self._engine.model_id,
                probe,
                tools=tools,
                tool_choice=ToolChoice(ToolChoiceMode.FUNCTION, tool.name),
                parallel_tool_calls=False,
            )
            output = output_constraint(request, tool_format)
            assert output is not None  # tools are offered
            try:
                check_output(self._engine, *output)
            except InvalidRequestError as exc:
                raise ConfigError(
                    f"tool '{tool.name}': its calls cannot be constrained: {exc}"
                ) from None

    def _params(self, max_tokens: int, temperature: float) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens, temperature=temperature, seed=self._rng.randrange(2**31)
        )

    async def _request(
        self, tools: Sequence[ToolSpec], target: ToolSpec | None, written: Sequence[str]
    ) -> str:
        shown = self._rng.sample(list(written), min(EXAMPLES_SHOWN, len(written)))
        examples = (
            "Requests already written (write a different one):\n"
            + "".join(f"- {text}\n" for text in shown)
            if shown
            else ""
        )
        if target is None:
            listed = "\n".join(
                f"- {t.name}" + (f": {t.description}" if t.description else "") for t in tools
            )
            prompt = NO_CALL_REQUEST_PROMPT.format(tools=listed, examples=examples)
        else:
            prompt = CALL_REQUEST_PROMPT.format(tool=describe_tool(target), examples=examples)
        params = self._params(REQUEST_TOKENS, self._temperature)
        completion = await chat_once(self._engine, (Message(Role.USER, prompt),), params)
        return clean_task(clean_text(completion.text))

    async def _answer(
        self, tools: tuple[ToolSpec, ...], request: str, choice: ToolChoice
    ) -> Choice:
        chat = ChatRequest(
            self._engine.model_id,
            (Message(Role.USER, request),),
            self._params(self._max_tokens, 0.3),
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=False,
        )
        return (await self._generation.chat(chat)).choices[0]

    async def _call(
        self, tools: tuple[ToolSpec, ...], target: ToolSpec, request: str, number: int
    ) -> ToolConversation | str:
        """The request answered with the target's call, or why it was rejected."""
        choice = await self._answer(
            tools, request, ToolChoice(ToolChoiceMode.FUNCTION, target.name)
        )
        reason = _call_problem(choice, target)
        if reason is not None:
            kind, detail = reason
            log.warning("tool_call_rejected", tool=target.name, reason=kind, detail=detail)
            return kind
        (call,) = choice.tool_calls
        arguments = json.dumps(json.loads(call.arguments), ensure_ascii=False)
        made = ToolCall(f"call_{number}", target.name, arguments)
        return ToolConversation(tools, request, made, clean_text(choice.text))

    async def _text(self, tools: tuple[ToolSpec, ...], request: str) -> ToolConversation | str:
        """The request answered in text (tools offered, `tool_choice` none), or why not."""
        choice = await self._answer(tools, request, ToolChoice(ToolChoiceMode.NONE))
        answer = clean_text(choice.text)
        if not answer:
            return "empty_answer"
        return ToolConversation(tools, request, None, answer)


def _call_problem(choice: Choice, target: ToolSpec) -> tuple[str, str] | None:
    """Why `choice` is not one valid call of `target` (a counted kind and a detail), or None.
    Under the grammar none of these should happen; they are checked all the same."""
    if choice.finish_reason is FinishReason.LENGTH:
        return "truncated_call", "the token budget ended the answer"
    if not choice.tool_calls:
        return "no_call", f"answered in text: {choice.text[:80]!r}"
    if len(choice.tool_calls) > 1:
        return "several_calls", f"{len(choice.tool_calls)} calls"
    call = choice.tool_calls[0]
    if call.name != target.name:
        return "wrong_function", f"called {call.name!r}"
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return "invalid_json", f"arguments {call.arguments[:80]!r}"
    reason = check_instance(arguments, target.parameters)
    if reason is not None:
        return "invalid_arguments", reason
    return None
