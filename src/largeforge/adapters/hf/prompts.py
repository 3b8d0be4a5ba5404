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
            probe = [{"role": "user", "content": "probe"}]
            try:
                bare = self._apply(probe, None, tokenize=False)
                with_tools = self._apply(probe, [_PROBE_TOOL.as_dict()], tokenize=False)
                self._native_tools = bare != with_tools and _PROBE_TOOL.name in str(with_tools)
            except Exception:  # a template that fails on tools does not support them
                self._native_tools = False
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
        native = self.native_tools
        plain = all(
            m.role is not Role.TOOL and not m.tool_calls and m.tool_call_id is None
            for m in messages
        )
        if tools or not plain:
            if not native:
                return str(self._apply(_dicts(with_fallback_tools(messages, tools)), None))
            return str(self._apply(_dicts(messages), [t.as_dict() for t in tools] or None))
        return str(self._apply(_dicts(messages), None))

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


def _dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [m.as_dict() for m in messages]
