"""Prompt token ids from a transformers tokenizer: the part every engine shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from largeforge.domain.datasets import Message, Role
from largeforge.domain.errors import InvalidRequestError
from largeforge.domain.tool_prompt import with_fallback_tools
from largeforge.domain.tools import ToolSpec

_PROBE_TOOL = ToolSpec("largeforge_probe_tool", "probe", {"type": "object", "properties": {}})


class TokenizerCodec:
    """`render_chat`, `tokenize`, `decode` and `tool_format` of the `InferenceEngine` port over
    `_tokenizer`.

    Both engines render and count prompts this way, so usage counts agree between them. A chat
    template that renders `tools=` itself is used as it is; for one that ignores them (SmolLM2's)
    the conversation is rewritten with the hermes fallback block (`domain.tool_prompt`).
    """

    _tokenizer: Any
    _native_tools: bool | None = None

    @property
    def native_tools(self) -> bool:
        """Whether the chat template renders tools itself (probed once)."""
        if self._native_tools is None:
            self._native_tools = renders_tools(self._tokenizer)
        return self._native_tools

    @property
    def tool_format(self) -> str:
        """The tool-call format the template teaches; `hermes` for the fallback block."""
        from largeforge.adapters.tools import format_for_template

        if not self.native_tools:
            return "hermes"
        return format_for_template(getattr(self._tokenizer, "chat_template", None))

    def render_chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> list[int]:
        return list(self._ids(self.chat_text(messages, tools)))

    def chat_text(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt as text: the conversation in the chat template plus the generation
        prompt."""
        dicts, tools_arg = template_inputs(messages, tools, self.native_tools)
        return str(self._apply(dicts, tools_arg))

    def _apply(self, messages: list[dict[str, Any]], tools: Any, tokenize: bool = False) -> Any:
        from jinja2 import TemplateError

        try:
            return self._tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=tokenize
            )
        except TemplateError as exc:  # the template's own refusal (e.g. roles must alternate)
            raise InvalidRequestError(
                f"the model's chat template refuses these messages: {exc}", param="messages"
            ) from None

    def _ids(self, text: str) -> list[int]:
        # The rendered template already holds its special tokens (BOS included, if any).
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [str(t) for t in self._tokenizer.convert_ids_to_tokens(list(ids))]


def renders_tools(tokenizer: Any) -> bool:
    """Whether `tokenizer`'s chat template renders `tools=` itself (SmolLM2's does not)."""
    probe = [{"role": "user", "content": "probe"}]
    try:
        bare = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        with_tools = tokenizer.apply_chat_template(
            probe, tools=[_PROBE_TOOL.as_dict()], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # a template that fails on tools does not support them
        return False
    return bool(bare != with_tools and _PROBE_TOOL.name in str(with_tools))


def template_inputs(
    messages: Sequence[Message], tools: Sequence[ToolSpec], native: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and `tools=` to give the chat template: as they are for a template that
    renders tools (`native`), else rewritten with the hermes fallback block. Serving and
    training both render through this, so a model is served the text it was trained on."""
    plain = all(
        m.role is not Role.TOOL and not m.tool_calls and m.tool_call_id is None for m in messages
    )
    if not tools and plain:
        return _dicts(messages), None
    if not native:
        return _dicts(with_fallback_tools(messages, tools)), None
    return _dicts(messages), [t.as_dict() for t in tools] or None


def _dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [m.as_dict() for m in messages]
