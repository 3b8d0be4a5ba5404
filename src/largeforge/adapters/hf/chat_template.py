"""Loss masks from the tokenizer's own chat template, computed turn by turn.

For each assistant turn `i`, the template renders `messages[:i]` with the generation prompt and
`messages[:i + 1]` without it; the characters between the two are that turn (its content and
end-of-turn token). The whole conversation is tokenized once with offsets, and the tokens that
start inside a trained span carry labels. Text after the end-of-turn token inside the span (the
newline ChatML puts after `<|im_end|>`) is not trained. No `{% generation %}` markers needed.

Conversations with tools are rendered as the server renders them (`prompts.template_inputs`):
with the template's own `tools=` when it renders them, else with the hermes fallback block. An
assistant turn's calls are part of the turn, so they are trained; tool results and the tools
declaration are prompt text, so they are not.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from largeforge.adapters.hf.prompts import renders_tools, template_inputs
from largeforge.domain.datasets import EncodedExample, SftExample, TextExample
from largeforge.domain.errors import DatasetError
from largeforge.domain.formats import RowError


class ChatTemplateError(DatasetError):
    """The tokenizer's chat template cannot produce turn-by-turn masks for a conversation."""


class HfChatTemplateEncoder:
    """`ExampleEncoder` over a transformers tokenizer with a chat template.

    `train_on="all"` trains every assistant turn; `"last"` only the final one.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_on: str = "all",
        end_ids: Iterable[int] = (),
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("the tokenizer has no chat template")
        if train_on not in {"all", "last"}:
            raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
        self._tokenizer = tokenizer
        self._train_on = train_on
        ids = set(end_ids)
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        self._end_ids = frozenset(ids)
        self._generation_suffix = self._probe_generation_suffix()
        self._native_tools: bool | None = None

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _render(
        self,
        messages: list[dict[str, Any]],
        generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        from jinja2 import TemplateError

        try:
            text = self._tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
            )
        except TemplateError as exc:  # the template's own refusal, e.g. parallel calls
            raise RowError(
                f"the model's chat template refuses this conversation: {exc}",
                "messages",
                kind="template_refused",
            ) from None
        return str(text)

    @property
    def native_tools(self) -> bool:
        """Whether the template renders `tools=` itself (else: the hermes fallback block)."""
        if self._native_tools is None:
            self._native_tools = renders_tools(self._tokenizer)
        return self._native_tools

    def spans(self, example: SftExample) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of the trained assistant turns."""
        messages, tools = template_inputs(
            example.conversation.messages, example.tools, self.native_tools
        )
        full = self._render(messages, False, tools)
        assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self._train_on == "last":
            assistant_turns = assistant_turns[-1:]
        spans = []
        last = len(messages) - 1
        suffix = self._generation_suffix
        for i in assistant_turns:
            if i == last and suffix and suffix not in _turn_text(messages[i]):
                # The final turn starts right after the last generation prompt in `full`; this
                # saves a render per conversation (the other turns are rendered and checked).
                spans.append((full.rindex(suffix) + len(suffix), len(full)))
                continue
            before = self._render(messages[:i], True, tools)
            through = full if i == last else self._render(messages[: i + 1], False, tools)
            if not (through.startswith(before) and full.startswith(through)):
                raise ChatTemplateError(
                    "the chat template renders earlier turns differently once later turns are "
                    "added, so turn-by-turn masks are ambiguous for this model"
                )
            spans.append((len(before), len(through)))
        return full, spans

    def encode(self, example: SftExample) -> EncodedExample:
        return self.encode_many([example])[0]

    def encode_many(self, examples: Sequence[SftExample]) -> list[EncodedExample]:
        """Encode a batch: one tokenizer call (parallel in Rust) for all rendered texts."""
        rendered = [self.spans(example) for example in examples]
        if not rendered:
            return []
        texts = [text for text, _ in rendered]
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is not None:  # fast path: the Rust tokenizer, no per-item Python conversion
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            tokenized = [(e.ids, e.offsets) for e in encodings]
        else:
            batch = self._tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            tokenized = list(zip(batch["input_ids"], batch["offset_mapping"], strict=True))
        return [
            self._mask(example, ids, offsets, spans)
            for example, (ids, offsets), (_, spans) in zip(
                examples, tokenized, rendered, strict=True
            )
        ]

    def _render_all(
        self, examples: Sequence[SftExample]
    ) -> list[tuple[str, list[tuple[int, int]]]]:
        return [self.spans(example) for example in examples]

    def _probe_generation_suffix(self) -> str:
        """What `add_generation_prompt` appends (e.g. `<|im_start|>assistant\\n`), or ''."""
        probe = [{"role": "user", "content": "probe"}]
        bare = self._render(probe, generation_prompt=False)
        with_prompt = self._render(probe, generation_prompt=True)
        return with_prompt[len(bare) :] if with_prompt.startswith(bare) else ""

    def _mask(
        self,
        example: SftExample,
        ids: list[int],
        offsets: list[tuple[int, int]],
        spans: list[tuple[int, int]],
    ) -> EncodedExample:
        trainable = [False] * len(ids)
        for start, end in spans:  # tokens whose first character lies inside the span
            first = bisect_left(offsets, start, key=_first)
            last = bisect_left(offsets, end, lo=first, key=_first)
            for k in range(first, last):
                if ids[k] in self._end_ids:  # what follows the end-of-turn token is template glue
                    last = k + 1
                    break
            trainable[first:last] = [True] * (last - first)
        return EncodedExample(tuple(ids), tuple(trainable), example.source)

    def encode_text(self, example: TextExample) -> EncodedExample:
        ids = list(self._tokenizer(example.text, add_special_tokens=True)["input_ids"])
        if self._tokenizer.eos_token_id is not None:
            ids.append(int(self._tokenizer.eos_token_id))
        return EncodedExample(tuple(ids), (True,) * len(ids), example.source)


def _turn_text(message: dict[str, Any]) -> str:
    """A turn's text and its calls as templates write them (JSON-escaped)."""
    calls = json.dumps(message.get("tool_calls") or [], ensure_ascii=False)
    return f"{message['content']}{calls}"


def _first(offset: tuple[int, int]) -> int:
    return offset[0]


class HfEncoderFactory:
    """`EncoderFactory`: loads a model directory's tokenizer (not its weights)."""

    def for_model(self, model_dir: str, train_on: str = "all") -> HfChatTemplateEncoder:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return HfChatTemplateEncoder(tokenizer, train_on, _generation_eos_ids(Path(model_dir)))


def _generation_eos_ids(model_dir: Path) -> list[int]:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return []
    value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value or []]
