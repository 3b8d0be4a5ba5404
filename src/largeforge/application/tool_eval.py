"""The tool-call task of `largeforge eval`: does the model call the right function with the
right arguments, and refrain when no call is needed?

Rows (`largeforge.application.tool_rows`) are sent through `TextGeneration` with their tools
and `tool_choice` (default `auto`), greedy, as `largeforge serve` answers them: the tools in the
model's chat template (or the hermes fallback block), the format's grammar constraining every
call that starts (`grammar=False` drops the grammar: calls are parsed from free text, to measure
the model's own validity), calls parsed out of the text into `Choice.tool_calls`.

Metrics (each a share with a Wilson 95 % interval; a metric with nothing to count is left out):

- `accuracy`, over all rows: a row expecting calls made exactly those calls (the same
  functions, arguments equal as JSON values, in any order, none extra); a row expecting none
  made none.
- `function`, over rows expecting calls: the same functions were called, as many times each.
- `arguments`, over rows whose functions were right: the arguments were equal too.
- `no_call`, over rows expecting no call: none was made.
- `valid_json`, over the calls made: the arguments are a JSON object.
- `valid_call`, over the calls made: an offered function, arguments valid for its schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from largeforge.application.eval_rows import answer_all, read_rows
from largeforge.application.ports import EngineFactory, RowSource
from largeforge.application.serving import ToolFormats
from largeforge.application.tool_rows import ToolCase, ToolRowParser
from largeforge.domain.eval_matching import MadeCall, score_calls
from largeforge.domain.evaluation import ModelVariant, Score, proportion_score
from largeforge.domain.generation import ChatRequest, Choice, SamplingParams
from largeforge.domain.schema_check import check_instance
from largeforge.domain.tools import ToolSpec

log = structlog.get_logger(__name__)

DEFAULT_MAX_TOKENS = 256
"""Tokens an answer may take when its row sets none (room for a call or two)."""

BUNDLED_PACKAGE = "largeforge.resources.eval"
BUNDLED_FILE = "tools_eval.jsonl"
"""The bundled tool-call set (`--tasks tools`): `importlib.resources.files(BUNDLED_PACKAGE)`."""

METRICS = ("accuracy", "function", "arguments", "no_call", "valid_json", "valid_call")


def read_tool_file(
    source: RowSource, path: str, tools: Sequence[ToolSpec] = ()
) -> tuple[ToolCase, ...]:
    """Every row of a tool-call file (`tools`: the default tools of rows that give none), or a
    `DatasetError` naming each bad row's line and field."""
    return read_rows(source, path, ToolRowParser(tools))


def made_calls(choice: Choice) -> tuple[MadeCall, ...]:
    return tuple(MadeCall(call.name, call.arguments) for call in choice.tool_calls)


def valid_call(case: ToolCase, call: MadeCall) -> bool:
    """An offered function, called with a JSON object that satisfies its parameters."""
    tool = case.tool(call.name)
    decoded = call.decoded()
    return tool is not None and call.valid_json and check_instance(decoded, tool.parameters) is None


def score_tool_rows(
    task: str, cases: Sequence[ToolCase], made: Sequence[Sequence[MadeCall]]
) -> tuple[Score, ...]:
    """The metrics of the calls made on each row (in row order); see the module doc."""
    outcomes = [score_calls(c.expected, m) for c, m in zip(cases, made, strict=True)]
    counted: dict[str, list[bool]] = {
        "accuracy": [o.correct for o in outcomes],
        "function": [o.function for o in outcomes if o.expects_call],
        "arguments": [o.arguments for o in outcomes if o.expects_call and o.function],
        "no_call": [not o.called for o in outcomes if not o.expects_call],
        "valid_json": [call.valid_json for calls in made for call in calls],
        "valid_call": [
            valid_call(c, call) for c, calls in zip(cases, made, strict=True) for call in calls
        ],
    }
    return tuple(
        proportion_score(task, metric, counted[metric]) for metric in METRICS if counted[metric]
    )


class ToolCallEvalTask:
    """`EvaluationTask` over tool-call rows (see the module doc for the metrics).

    `tool_formats` maps a format name to its `ToolCallFormat` (the container's registry);
    `tool_call_parser` overrides the format the model's template implies, as `serve` does.
    """

    def __init__(
        self,
        name: str,
        cases: Sequence[ToolCase],
        engines: EngineFactory,
        tool_formats: ToolFormats,
        *,
        grammar: bool = True,
        tool_call_parser: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        concurrency: int = 8,
    ) -> None:
        if not cases:
            raise ValueError("a tool-call task needs at least one row")
        self._name = name
        self._cases = tuple(cases)
        self._engines = engines
        self._tool_formats = tool_formats
        self._grammar = grammar
        self._parser = tool_call_parser
        self._max_tokens = max_tokens
        self._concurrency = concurrency

    @property
    def name(self) -> str:
        return self._name

    @property
    def cases(self) -> tuple[ToolCase, ...]:
        return self._cases

    def requests(self, model: str) -> list[ChatRequest]:
        """One greedy request per row, with its tools and tool_choice, addressed to `model`."""
        return [
            ChatRequest(
                model,
                case.messages,
                SamplingParams(max_tokens=case.max_tokens or self._max_tokens, temperature=0.0),
                tools=case.tools,
                tool_choice=case.tool_choice,
                parallel_tool_calls=case.parallel_tool_calls,
            )
            for case in self._cases
        ]

    def answers(self, variant: ModelVariant) -> list[Choice]:
        """Each row's answer by `variant` (the engine is opened and closed here)."""
        engine = self._engines.open(variant)
        try:
            return answer_all(
                engine,
                self.requests(variant.name),
                lines=[c.line for c in self._cases],
                name=self._name,
                tool_formats=self._tool_formats,
                tool_call_parser=self._parser,
                tool_grammar=self._grammar,
                concurrency=self._concurrency,
            )
        finally:
            engine.close()

    def evaluate(self, variant: ModelVariant) -> tuple[Score, ...]:
        choices = self.answers(variant)
        made = [made_calls(choice) for choice in choices]
        for case, choice, calls in zip(self._cases, choices, made, strict=True):
            if not score_calls(case.expected, calls).correct:
                log.debug(
                    "tool_call_mismatch",
                    task=self._name,
                    line=case.line,
                    calls=[(c.name, c.arguments) for c in calls],
                    text=choice.text,
                )
        return score_tool_rows(self._name, self._cases, made)
