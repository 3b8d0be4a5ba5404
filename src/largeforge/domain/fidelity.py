"""Fidelity: does a served artifact (a merged or quantized model) still speak the way training
did? The facts of a tokenizer and its configs, their comparison, and greedy probe answers.

Every mismatch is one line that names its field, e.g. `generation_config.eos_token_id is 0
(<|endoftext|>) but training ended turns with 2 (<|im_end|>)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Characters of context shown either side of the first difference between two templates.
SNIPPET = 24


@dataclass(frozen=True, slots=True)
class TokenizerFacts:
    """What decides how a model's conversations are written and when its answers end.

    `turn_end_token(_id)` is the token the chat template ends an assistant turn with (found by
    rendering a [user, assistant] conversation: the first special token after the assistant's
    content, e.g. `<|im_end|>` for ChatML). `generation_*` come from generation_config.json and
    `config_eos_token_ids` from config.json, read as the files are (an absent file or key is
    empty/None). `token_names` names the ids those configs mention (id -> vocabulary entry).
    """

    chat_template: str | None = None
    bos_token: str | None = None
    bos_token_id: int | None = None
    eos_token: str | None = None
    eos_token_id: int | None = None
    pad_token: str | None = None
    pad_token_id: int | None = None
    special_tokens: tuple[tuple[str, int], ...] = ()
    turn_end_token: str | None = None
    turn_end_token_id: int | None = None
    generation_eos_token_ids: tuple[int, ...] = ()
    generation_pad_token_id: int | None = None
    generation_bos_token_id: int | None = None
    config_eos_token_ids: tuple[int, ...] = ()
    token_names: tuple[tuple[int, str], ...] = ()

    @property
    def special_token_ids(self) -> dict[str, int]:
        return dict(self.special_tokens)

    def name_of(self, token_id: int) -> str | None:
        """The vocabulary entry of `token_id`, when these facts know it."""
        for token, known in self.special_tokens:
            if known == token_id:
                return token
        return dict(self.token_names).get(token_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chat_template": self.chat_template,
            "bos_token": self.bos_token,
            "bos_token_id": self.bos_token_id,
            "eos_token": self.eos_token,
            "eos_token_id": self.eos_token_id,
            "pad_token": self.pad_token,
            "pad_token_id": self.pad_token_id,
            "special_tokens": dict(self.special_tokens),
            "turn_end_token": self.turn_end_token,
            "turn_end_token_id": self.turn_end_token_id,
            "generation_config": {
                "eos_token_id": list(self.generation_eos_token_ids),
                "pad_token_id": self.generation_pad_token_id,
                "bos_token_id": self.generation_bos_token_id,
            },
            "config": {"eos_token_id": list(self.config_eos_token_ids)},
            "token_names": {str(i): name for i, name in self.token_names},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerFacts:
        generation = data.get("generation_config") or {}
        config = data.get("config") or {}
        return cls(
            chat_template=data.get("chat_template"),
            bos_token=data.get("bos_token"),
            bos_token_id=data.get("bos_token_id"),
            eos_token=data.get("eos_token"),
            eos_token_id=data.get("eos_token_id"),
            pad_token=data.get("pad_token"),
            pad_token_id=data.get("pad_token_id"),
            special_tokens=tuple(
                sorted(
                    ((str(t), int(i)) for t, i in (data.get("special_tokens") or {}).items()),
                    key=lambda item: (item[1], item[0]),
                )
            ),
            turn_end_token=data.get("turn_end_token"),
            turn_end_token_id=data.get("turn_end_token_id"),
            generation_eos_token_ids=token_ids(generation.get("eos_token_id")),
            generation_pad_token_id=generation.get("pad_token_id"),
            generation_bos_token_id=generation.get("bos_token_id"),
            config_eos_token_ids=token_ids(config.get("eos_token_id")),
            token_names=tuple(
                sorted((int(i), str(n)) for i, n in (data.get("token_names") or {}).items())
            ),
        )


def token_ids(value: Any) -> tuple[int, ...]:
    """A config's `eos_token_id` (absent, one id or a list) as a tuple of ids."""
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@dataclass(frozen=True, slots=True)
class FidelityMismatch:
    """One field that differs from what training used, in one line."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def _named(token_id: int | None, facts: TokenizerFacts) -> str:
    if token_id is None:
        return "not set"
    name = facts.name_of(token_id)
    return f"{token_id} ({name})" if name is not None else str(token_id)


def _ids_named(ids: Sequence[int], facts: TokenizerFacts) -> str:
    if not ids:
        return "not set"
    names = [_named(i, facts) for i in ids]
    return names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"


def _token(token: str | None, token_id: int | None) -> str:
    if token is None and token_id is None:
        return "not set"
    return f"{token} (id {token_id})"


def first_difference(a: str, b: str) -> int:
    """The index of the first character where `a` and `b` differ (the shorter's length when
    one is a prefix of the other)."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


def _template_mismatch(trained: str | None, actual: str | None) -> FidelityMismatch | None:
    if trained == actual:
        return None
    if actual is None:
        return FidelityMismatch("chat_template", "chat_template is missing but training used one")
    if trained is None:
        return FidelityMismatch(
            "chat_template", "chat_template is set but training used none (the default)"
        )
    at = first_difference(trained, actual)
    had = trained[at : at + SNIPPET]
    has = actual[at : at + SNIPPET]
    return FidelityMismatch(
        "chat_template",
        f"chat_template differs from the one training used (first difference at character "
        f"{at}: training had {had!r}, this one has {has!r})",
    )


def _token_mismatch(
    name: str,
    trained: tuple[str | None, int | None],
    actual: tuple[str | None, int | None],
) -> FidelityMismatch | None:
    if trained == actual:
        return None
    return FidelityMismatch(
        name, f"{name} is {_token(*actual)} but training used {_token(*trained)}"
    )


def _special_mismatches(trained: TokenizerFacts, actual: TokenizerFacts) -> list[FidelityMismatch]:
    have = actual.special_token_ids
    had = trained.special_token_ids
    found: list[FidelityMismatch] = []
    for token, token_id in trained.special_tokens:
        if token not in have:
            found.append(
                FidelityMismatch(
                    "special_tokens", f"special_tokens: {token} (id {token_id}) is missing"
                )
            )
        elif have[token] != token_id:
            found.append(
                FidelityMismatch(
                    "special_tokens",
                    f"special_tokens: {token} is id {have[token]} but training used id {token_id}",
                )
            )
    for token, token_id in actual.special_tokens:
        if token not in had:
            found.append(
                FidelityMismatch(
                    "special_tokens",
                    f"special_tokens: {token} (id {token_id}) was not there in training",
                )
            )
    return found


def _turn_end(facts: TokenizerFacts) -> tuple[str | None, int | None]:
    """The token training ended assistant turns with (the tokenizer's EOS when the template
    showed none)."""
    if facts.turn_end_token_id is not None:
        return facts.turn_end_token, facts.turn_end_token_id
    return facts.eos_token, facts.eos_token_id


def compare_facts(trained: TokenizerFacts, actual: TokenizerFacts) -> list[FidelityMismatch]:
    """Every field of `actual` that differs from what training used, one mismatch each.

    Tokens, template and special tokens must be equal. The EOS rule of generation: the ids
    generation_config.json (and config.json, when it names any) stops on must include the id
    training ended turns with; extra ids are fine. generation_config's pad and bos ids must
    equal training's.
    """
    found: list[FidelityMismatch] = []
    template = _template_mismatch(trained.chat_template, actual.chat_template)
    if template is not None:
        found.append(template)
    pairs: tuple[tuple[str, tuple[str | None, int | None], tuple[str | None, int | None]], ...] = (
        (
            "bos_token",
            (trained.bos_token, trained.bos_token_id),
            (actual.bos_token, actual.bos_token_id),
        ),
        (
            "eos_token",
            (trained.eos_token, trained.eos_token_id),
            (actual.eos_token, actual.eos_token_id),
        ),
        (
            "pad_token",
            (trained.pad_token, trained.pad_token_id),
            (actual.pad_token, actual.pad_token_id),
        ),
    )
    for name, had, has in pairs:
        mismatch = _token_mismatch(name, had, has)
        if mismatch is not None:
            found.append(mismatch)
    had_end = (trained.turn_end_token, trained.turn_end_token_id)
    has_end = (actual.turn_end_token, actual.turn_end_token_id)
    if had_end != has_end:
        found.append(
            FidelityMismatch(
                "turn_end_token",
                f"the chat template ends assistant turns with {_token(*has_end)} but training "
                f"ended them with {_token(*had_end)}",
            )
        )
    found += _special_mismatches(trained, actual)
    end_token, end_id = _turn_end(trained)
    if end_id is not None:
        ended = f"{end_id} ({end_token})" if end_token is not None else str(end_id)
        if end_id not in actual.generation_eos_token_ids:
            found.append(
                FidelityMismatch(
                    "generation_config.eos_token_id",
                    f"generation_config.eos_token_id is "
                    f"{_ids_named(actual.generation_eos_token_ids, actual)} but training ended "
                    f"turns with {ended}",
                )
            )
        if (
            actual.config_eos_token_ids != trained.config_eos_token_ids
            and end_id not in actual.config_eos_token_ids
        ):
            found.append(
                FidelityMismatch(
                    "config.eos_token_id",
                    f"config.eos_token_id is {_ids_named(actual.config_eos_token_ids, actual)} "
                    f"but training ended turns with {ended}",
                )
            )
    for name, had_id, has_id in (
        ("pad_token_id", trained.generation_pad_token_id, actual.generation_pad_token_id),
        ("bos_token_id", trained.generation_bos_token_id, actual.generation_bos_token_id),
    ):
        if had_id != has_id:
            found.append(
                FidelityMismatch(
                    f"generation_config.{name}",
                    f"generation_config.{name} is {_named(has_id, actual)} but training used "
                    f"{_named(had_id, trained)}",
                )
            )
    return found


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """A greedy answer to one probe prompt.

    `stopped`: it ended with an end-of-sequence token (finish reason `stop`), else it ran out
    of tokens. `completion_tokens` counts the end-of-sequence token, as the API's usage does.
    `tokens` are the generated tokens' texts and `top2_gaps` the log-probability margin of the
    top choice over the runner-up at each of them (empty when not known).
    """

    text: str
    completion_tokens: int
    stopped: bool
    tokens: tuple[str, ...] = ()
    top2_gaps: tuple[float, ...] = ()

    def summary(self) -> str:
        end = "stopped" if self.stopped else "ran out"
        return f"{self.text!r} ({self.completion_tokens} tokens, {end})"


@dataclass(frozen=True, slots=True)
class AnswerComparison:
    """Two answers to one probe: a mismatch, a note (a greedy tie), or neither (equal)."""

    mismatch: FidelityMismatch | None = None
    note: str | None = None


def _gap_at(answer: ProbeAnswer, index: int) -> float | None:
    return answer.top2_gaps[index] if index < len(answer.top2_gaps) else None


def compare_answers(
    check: str,
    probe: str,
    expected: tuple[str, ProbeAnswer],
    actual: tuple[str, ProbeAnswer],
    *,
    tie_gap: float = 0.0,
) -> AnswerComparison:
    """Compare two greedy answers to `probe` (text, completion token count, stopped or ran
    out). `expected` and `actual` are (label, answer). When the tokens first diverge where
    either side's top-two log-probabilities are closer than `tie_gap`, greedy decoding could
    have gone either way: that is a tie, reported as a note instead of a mismatch.
    """
    (expected_label, want), (actual_label, got) = expected, actual
    if (want.text, want.completion_tokens, want.stopped) == (
        got.text,
        got.completion_tokens,
        got.stopped,
    ):
        return AnswerComparison()
    where = ""
    if want.tokens and got.tokens:
        index = first_token_difference(want.tokens, got.tokens)
        where = f"; first difference at token {index}"
        gaps = [g for g in (_gap_at(want, index), _gap_at(got, index)) if g is not None]
        if gaps and min(gaps) < tie_gap:
            return AnswerComparison(
                note=f"{check}: probe {probe!r} diverged at token {index}, where the top two "
                f"log-probabilities are {min(gaps):.1e} apart (a greedy tie, under "
                f"{tie_gap:.0e}); not counted"
            )
    return AnswerComparison(
        mismatch=FidelityMismatch(
            check,
            f"{check}: probe {probe!r}: {actual_label} answered {got.summary()} but "
            f"{expected_label} answered {want.summary()}{where}",
        )
    )


def first_token_difference(a: Sequence[str], b: Sequence[str]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


@dataclass(frozen=True, slots=True)
class FidelityCheck:
    """One check done: its name, the model directory it looked at, what differed, and notes."""

    name: str
    subject: str
    mismatches: tuple[FidelityMismatch, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.subject,
            "ok": self.ok,
            "mismatches": [{"field": m.field, "message": m.message} for m in self.mismatches],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class FidelityReport:
    """Every check done on one run or model, and whether all of them found everything equal."""

    checks: tuple[FidelityCheck, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def mismatches(self) -> tuple[FidelityMismatch, ...]:
        return tuple(m for c in self.checks for m in c.mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "notes": list(self.notes),
        }
