"""OpenAI-compatible request bodies (pydantic) and their mapping to the domain.

Fields OpenAI defines but this server does not implement are accepted at their neutral value
and refused (400, naming the field) otherwise; fields OpenAI does not define are refused, as
OpenAI itself does ("Unrecognized request argument").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.generation import (
    MAX_CHOICES,
    MAX_TOP_LOGPROBS,
    ChatRequest,
    SamplingParams,
    TextRequest,
)
from largeforge.entrypoints.http.tool_schemas import (
    ResponseFormatIn,
    StructuredOutputs,
    ToolCallIn,
    ToolChoiceIn,
    ToolIn,
    response_format,
    tool_choice,
)

SEED_RANGE = (-(2**63), 2**64 - 1)
MAX_STOP = 4


def _schema(schema: dict[str, Any]) -> WithJsonSchema:
    """The JSON Schema of a field whose limits a model validator checks (not pydantic itself)."""
    return WithJsonSchema(schema)


def _or_null(schema: dict[str, Any]) -> WithJsonSchema:
    return _schema({"anyOf": [schema, {"type": "null"}]})


def _integral(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer; strict pydantic would not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]


def _requires(field: str, when: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema rule: when `field` matches `when`, the body must match `then`."""
    return {"if": {"properties": {field: when}, "required": [field]}, "then": then}


STREAM_RULE = _requires(
    "stream_options",
    {"type": "object"},
    {"properties": {"stream": {"const": True}}, "required": ["stream"]},
)
TOP_LOGPROBS_RULE = _requires(
    "top_logprobs",
    {"type": "integer"},
    {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
)
_TEXT = {"type": "string", "minLength": 1}
_TOKEN_IDS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
SINGLE_PROMPT_RULE = _requires(
    "stream",
    {"const": True},
    {
        "properties": {
            "prompt": {
                "anyOf": [_TEXT, _TOKEN_IDS, {"type": "array", "maxItems": 1}],
                "description": "stream=true takes a single prompt",
            }
        }
    },
)
Stop = Annotated[
    str | list[str] | None,
    _schema(
        {
            "anyOf": [
                _TEXT,
                {"type": "array", "items": _TEXT, "maxItems": MAX_STOP},
                {"type": "null"},
            ],
            "description": f"up to {MAX_STOP} non-empty stop sequences",
        }
    ),
]


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Body(BaseModel):
    # strict: a string is not a number nor `true` a 1, as in OpenAI's API
    model_config = ConfigDict(extra="forbid", strict=True)


class ContentPart(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
            "required": ["type", "text"],
        },
    )

    type: str
    text: str | None = None


def _message_by_role(schema: dict[str, Any]) -> None:
    """A message's JSON Schema as one branch per kind of turn (as OpenAI's own document does):
    only assistant turns carry `tool_calls`, only tool turns (and all of them) `tool_call_id`."""
    fields = schema.pop("properties")
    common = {"content": fields["content"], "name": fields["name"]}
    no = {"type": "null"}

    def branch(roles: list[str], extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"role": {"enum": roles}} | common | extra,
            "required": ["role", *required],
        }

    schema.pop("required", None)
    schema["anyOf"] = [
        branch(["system", "user", "developer"], {"tool_calls": no, "tool_call_id": no}, []),
        branch(["assistant"], {"tool_calls": fields["tool_calls"], "tool_call_id": no}, []),
        branch(["tool"], {"tool_calls": no, "tool_call_id": {"type": "string"}}, ["tool_call_id"]),
    ]


TOOL_CHOICE_RULE = _requires(
    "tool_choice",
    {"anyOf": [{"const": "required"}, {"type": "object"}]},
    {
        "properties": {"tools": {"type": "array", "minItems": 1}},
        "required": ["tools"],
        "description": "tool_choice 'required' or a named function needs tools (the named "
        "function among them)",
    },
)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(
        extra="allow",  # refusal, audio ...
        strict=True,
        json_schema_extra=_message_by_role,
    )

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part type '{part.type}' is not supported (only 'text')",
                    param=f"messages.{index}.content",
                )
            parts.append(part.text)
        return "".join(parts)

    def to_domain(self, index: int) -> Message:
        where = f"messages.{index}"
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequestError(
                "only assistant messages carry tool_calls", param=f"{where}.tool_calls"
            )
        if self.role == "tool" and self.tool_call_id is None:
            raise InvalidRequestError(
                "a tool message needs the tool_call_id it answers", param=f"{where}.tool_call_id"
            )
        if self.tool_call_id is not None and self.role != "tool":
            raise InvalidRequestError(
                "only tool messages carry tool_call_id", param=f"{where}.tool_call_id"
            )
        role = Role.SYSTEM if self.role == "developer" else Role(self.role)
        calls = tuple(call.to_domain() for call in self.tool_calls or ())
        name = self.name if self.role == "tool" else None
        return Message(role, self.text(index), calls, self.tool_call_id, name)


class StreamOptions(_Body):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class _Sampling(_Body):
    """Parameters shared by both endpoints."""

    model: str = Field(min_length=1)
    max_tokens: Int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: Int | None = Field(None, ge=-1)
    n: Int = Field(1, ge=1, le=MAX_CHOICES)
    stop: Stop = None
    seed: Int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: Annotated[
        dict[str, float] | None, _or_null({"type": "object", "maxProperties": 0})
    ] = None  # not supported: only empty
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    service_tier: str | None = None
    ignore_eos: StrictBool = False  # vLLM's extension, for benchmarks

    @model_validator(mode="after")
    def _consistent(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise _FieldError("stream_options", "stream_options is only allowed with stream=true")
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP:
            raise _FieldError("stop", f"at most {MAX_STOP} stop sequences")
        if self.stop == "" or (isinstance(self.stop, list) and "" in self.stop):
            raise _FieldError("stop", "stop sequences must not be empty")
        if self.logit_bias:
            raise _FieldError("logit_bias", "logit_bias is not supported")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0),
            stop=self.stops(),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logprobs=logprobs,
            ignore_eos=self.ignore_eos,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    """`POST /v1/chat/completions`."""

    model_config = ConfigDict(
        json_schema_extra={"allOf": [STREAM_RULE, TOP_LOGPROBS_RULE, TOOL_CHOICE_RULE]}
    )

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormatIn | None = None
    structured_outputs: StructuredOutputs | None = None  # vLLM's extension
    reasoning_effort: str | None = None
    modalities: list[str] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionBody:
        if self.top_logprobs is not None and not self.logprobs:
            raise _FieldError("top_logprobs", "top_logprobs requires logprobs=true")
        return self

    def to_domain(self) -> ChatRequest:
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        messages = tuple(m.to_domain(i) for i, m in enumerate(self.messages))
        max_tokens = self.max_completion_tokens or self.max_tokens
        tools = tuple(tool.to_domain(i) for i, tool in enumerate(self.tools or ()))
        return ChatRequest(
            self.model,
            messages,
            self.params(max_tokens, logprobs),
            self.n,
            tools=tools,
            tool_choice=tool_choice(self.tool_choice, bool(tools)),
            parallel_tool_calls=self.parallel_tool_calls is not False,
            response_format=response_format(self.response_format, self.structured_outputs),
        )


class CompletionBody(_Sampling):
    """`POST /v1/completions`: a prompt as text, texts, token ids or lists of token ids."""

    model_config = ConfigDict(json_schema_extra={"allOf": [STREAM_RULE, SINGLE_PROMPT_RULE]})

    prompt: Annotated[
        str | list[str] | list[Int] | list[list[Int]],
        _schema(
            {
                "anyOf": [
                    _TEXT,
                    {"type": "array", "items": _TEXT, "minItems": 1},
                    _TOKEN_IDS,
                    {"type": "array", "items": _TOKEN_IDS, "minItems": 1},
                ],
                "description": "a text, texts, token ids or lists of token ids (ids below the "
                "vocabulary size)",
            }
        ),
    ]
    echo: StrictBool = False
    logprobs: Int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    best_of: Int | None = Field(None, ge=1, description="must equal n when given")
    suffix: Annotated[str | None, _or_null({"type": "string", "maxLength": 0})] = None
    max_tokens: Int | None = Field(16, ge=1)

    @model_validator(mode="after")
    def _supported(self) -> CompletionBody:
        if self.best_of not in (None, self.n):
            raise _FieldError("best_of", "best_of other than n is not supported")
        if self.suffix:
            raise _FieldError("suffix", "suffix is not supported")
        if isinstance(self.prompt, list) and (not self.prompt or [] in self.prompt):
            raise _FieldError("prompt", "prompt must not be an empty list")
        return self

    def prompts(self) -> list[str | tuple[int, ...]]:
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [tuple(p for p in prompt if isinstance(p, int))]
        return [p if isinstance(p, str) else tuple(p) for p in prompt if not isinstance(p, int)]

    def to_domain(self) -> list[TextRequest]:
        params = self.params(self.max_tokens, self.logprobs)
        return [TextRequest(self.model, p, params, self.n, self.echo) for p in self.prompts()]


def parse_body(model: type[_Body], data: Any) -> Any:
    """Validate a JSON body; the first problem becomes an `InvalidRequestError` naming its field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _FieldError):
            raise InvalidRequestError(str(cause), param=cause.field) from None
        param = ".".join(_field_path(error["loc"])) or None
        if error["type"] == "extra_forbidden":
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {param}", param=param
            ) from None
        raise InvalidRequestError(f"{param}: {error['msg']}", param=param) from None


_TAGGED_UNIONS = {"response_format": {"text", "json_object", "json_schema"}}


def _field_path(loc: tuple[int | str, ...]) -> list[str]:
    """The body path of a validation error, without the union members pydantic names in it
    (`literal['none','auto']`, a model's class name, a discriminator's tag)."""
    path: list[str] = []
    previous: int | str | None = None
    for part in loc:
        tag = previous is not None and part in _TAGGED_UNIONS.get(str(previous), ())
        previous = part
        if tag or (isinstance(part, str) and ("[" in part or part[:1].isupper())):
            continue
        path.append(str(part))
    return path


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
