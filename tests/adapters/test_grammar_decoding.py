"""Grammar-constrained decoding: xgrammar constraints in the transformers engine.

The tiny model is random, so whatever it writes is shaped by the grammar alone: sampled at
temperature 1 it still has to produce JSON that validates, a regex match, one of the choices
or a parseable tool call. The engine-free parts (choice grammars, errors, the compile cache,
the bitmask on logits wider than the vocabulary) are tested on the tokenizer alone.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM

from largeforge.adapters.grammar.xgrammar import XgrammarGrammarEngine, choice_grammar
from largeforge.adapters.hf.batching import BatchStep
from largeforge.adapters.hf.inference import TransformersInferenceEngine
from largeforge.domain import FinishReason, Message, Role, SamplingParams
from largeforge.domain.errors import EngineFaultError, InvalidRequestError
from largeforge.domain.generation import TokenStep
from largeforge.domain.tools import Constraint, ConstraintKind

PET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "fish"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 999},
                "vip": {"type": "boolean"},
            },
            "required": ["id", "vip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "tags", "owner"],
    "additionalProperties": False,
}
SEEDS = range(6)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TransformersInferenceEngine]:
    engine = TransformersInferenceEngine(
        str(tiny_model_dir),
        "tiny",
        device="cpu",
        dtype="float32",
        max_model_len=512,
        max_num_seqs=8,
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def grammar(tokenizer: Any) -> XgrammarGrammarEngine:
    """A grammar engine over the tiny model's tokenizer alone (no model)."""
    return XgrammarGrammarEngine(tokenizer, len(tokenizer), [tokenizer.eos_token_id])


def prompt(engine: TransformersInferenceEngine, text: str) -> list[int]:
    return engine.render_chat((Message(Role.USER, text),))


async def steps(
    engine: TransformersInferenceEngine, ids: Sequence[int], params: SamplingParams
) -> list[TokenStep]:
    return [step async for step in engine.generate(ids, params)]


def run_all(
    engine: TransformersInferenceEngine, ids: Sequence[int], params: Sequence[SamplingParams]
) -> list[list[TokenStep]]:
    """Generate every `params` at once (they share the batch), in order."""

    async def together() -> list[list[TokenStep]]:
        return list(await asyncio.gather(*(steps(engine, ids, p) for p in params)))

    return asyncio.run(together())


def text_of(generated: Sequence[TokenStep]) -> str:
    return "".join(step.text for step in generated)


def sampled(constraint: Constraint, max_tokens: int = 200, **extra: Any) -> list[SamplingParams]:
    return [
        SamplingParams(
            max_tokens=max_tokens, temperature=1.0, seed=seed, constraint=constraint, **extra
        )
        for seed in SEEDS
    ]


# -- generation under a constraint -----------------------------------------------------------


def test_a_json_schema_sampled_at_temperature_1_always_validates(
    engine: TransformersInferenceEngine,
) -> None:
    constraint = Constraint.json_schema(PET_SCHEMA)
    results = run_all(engine, prompt(engine, "Describe a pet."), sampled(constraint))
    greedy = SamplingParams(max_tokens=200, temperature=0, constraint=constraint)
    results.append(asyncio.run(steps(engine, prompt(engine, "Describe a pet."), greedy)))
    texts = set()
    for generated in results:
        assert generated[-1].finish_reason is FinishReason.STOP
        assert generated[-1].token_id == engine.eos_token_id  # the grammar ended, then EOS
        text = text_of(generated)
        jsonschema.validate(json.loads(text), PET_SCHEMA)
        texts.add(text)
    assert len(texts) == len(results)  # the model chose the contents; the grammar the shape


def test_regex_and_choice_constraints_are_matched_exactly(
    engine: TransformersInferenceEngine,
) -> None:
    pattern = r"[A-Z][a-z]{2,8}-[0-9]{3}( \(ok\))?"
    regex = Constraint(ConstraintKind.REGEX, pattern)
    choices = ["yes", "no", 'say "hi"', "back\\slash", "two\nlines", "naïve café"]
    choice = Constraint(ConstraintKind.CHOICE, json.dumps(choices))
    ids = prompt(engine, "Answer.")
    results = run_all(engine, ids, [*sampled(regex), *sampled(choice)])
    for generated in results[: len(SEEDS)]:
        assert re.fullmatch(pattern, text_of(generated)), text_of(generated)
        assert generated[-1].finish_reason is FinishReason.STOP
    picked = [text_of(generated) for generated in results[len(SEEDS) :]]
    assert set(picked) <= set(choices)
    assert len(set(picked)) > 1  # sampled, not forced to one answer


def test_a_structural_tag_forces_a_parseable_tool_call(engine: TransformersInferenceEngine) -> None:
    arguments = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    begin = '<tool_call>\n{"name": "f", "arguments": '
    end = "}\n</tool_call>"
    tag = Constraint.structural_tag(
        {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags",
                "triggers": ["<tool_call>"],
                "tags": [
                    {
                        "type": "tag",
                        "begin": begin,
                        "content": {
                            "type": "json_schema",
                            "json_schema": arguments,
                            "max_whitespace_cnt": 1,
                        },
                        "end": end,
                    }
                ],
                "at_least_one": True,
                "stop_after_first": True,
            },
        }
    )
    engine.check_constraint(tag)
    for generated in run_all(engine, prompt(engine, "Weather?"), sampled(tag, max_tokens=120)):
        text = text_of(generated)
        assert generated[-1].finish_reason is FinishReason.STOP, text
        match = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", text, re.DOTALL)
        assert match, text
        call = json.loads(match[1])
        assert call["name"] == "f"
        jsonschema.validate(call["arguments"], arguments)


def test_constrained_and_unconstrained_rows_of_one_batch_each_get_what_they_asked(
    tiny_model_dir: Path,
) -> None:
    """Greedy, both rows: each output equals the one it gets alone, so the mask touched only
    the constrained row (and was applied on the argmax fast path)."""
    passes: list[BatchStep] = []
    mixed = TransformersInferenceEngine(
        str(tiny_model_dir),
        "tiny",
        device="cpu",
        dtype="float32",
        max_num_seqs=4,
        on_step=passes.append,
    )
    ids = prompt(mixed, "Tell me something.")
    free = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    shaped = SamplingParams(
        max_tokens=200, temperature=0, constraint=Constraint.json_schema(PET_SCHEMA)
    )
    try:
        alone_free = asyncio.run(steps(mixed, ids, free))
        alone_shaped = asyncio.run(steps(mixed, ids, shaped))
        passes.clear()
        together_free, together_shaped = run_all(mixed, ids, [free, shaped])
    finally:
        mixed.close()
    shared = [p for p in passes if p.phase == "decode" and len(p.rows) == 2]
    assert len(shared) >= 10  # they really ran in the same forward passes
    assert [s.token_id for s in together_free] == [s.token_id for s in alone_free]
    assert [s.token_id for s in together_shaped] == [s.token_id for s in alone_shaped]
    jsonschema.validate(json.loads(text_of(together_shaped)), PET_SCHEMA)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        first = model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert int(torch.argmax(first)) != together_shaped[0].token_id  # the mask changed it


def test_a_finished_grammar_ends_the_sequence_even_with_ignore_eos(
    engine: TransformersInferenceEngine,
) -> None:
    choice = Constraint(ConstraintKind.CHOICE, json.dumps(["alpha", "beta"]))
    params = SamplingParams(max_tokens=50, temperature=0, ignore_eos=True, constraint=choice)
    generated = asyncio.run(steps(engine, prompt(engine, "Pick."), params))
    assert text_of(generated) in ("alpha", "beta")
    assert generated[-1].finish_reason is FinishReason.STOP
    assert len(generated) < 50


def test_logprobs_of_a_constrained_row_are_those_of_the_raw_logits(
    engine: TransformersInferenceEngine, tiny_model_dir: Path
) -> None:
    regex = Constraint(ConstraintKind.REGEX, r"[0-9]{4}")
    ids = prompt(engine, "A year?")
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=5, logprobs=3, constraint=regex)
    generated = asyncio.run(steps(engine, ids, params))
    assert re.fullmatch(r"[0-9]{4}", text_of(generated))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    full = ids + [s.token_id for s in generated]
    with torch.inference_mode():
        logits = model(torch.tensor([full])).logits[0].float()
    reference = torch.log_softmax(logits, dim=-1)
    for offset, step in enumerate(generated):
        row = reference[len(ids) - 1 + offset]
        assert step.logprob is not None
        assert step.logprob.logprob == pytest.approx(float(row[step.token_id]), abs=1e-4)
        assert step.logprob.top[0][1] == pytest.approx(float(row.max()), abs=1e-4)  # unmasked


def test_a_token_the_grammar_refuses_fails_the_sequence(
    engine: TransformersInferenceEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the mask and the matcher ever disagree, the client gets an error, not garbage."""

    class Refusing:
        def __init__(self, matcher: Any) -> None:
            self._matcher = matcher

        def fill_next_token_bitmask(self, *args: Any) -> bool:
            return bool(self._matcher.fill_next_token_bitmask(*args))

        def accept_token(self, token: int) -> bool:
            return False

        def is_terminated(self) -> bool:
            return bool(self._matcher.is_terminated())

    real = engine.grammar.matcher
    monkeypatch.setattr(engine.grammar, "matcher", lambda c: Refusing(real(c)))
    params = SamplingParams(max_tokens=5, constraint=Constraint.json_schema({"type": "object"}))
    with pytest.raises(EngineFaultError, match="grammar refused token"):
        asyncio.run(steps(engine, prompt(engine, "Hi."), params))
    assert engine.load().running == 0


def test_an_equal_constraint_is_compiled_once(engine: TransformersInferenceEngine) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    before = engine.grammar.compiles
    engine.check_constraint(Constraint.json_schema(schema))
    assert engine.grammar.compiles == before + 1
    engine.check_constraint(Constraint.json_schema(json.loads(json.dumps(schema))))  # equal
    params = SamplingParams(max_tokens=30, temperature=0, constraint=Constraint.json_schema(schema))
    asyncio.run(steps(engine, prompt(engine, "n?"), params))
    assert engine.grammar.compiles == before + 1


@pytest.mark.parametrize(
    ("constraint", "reason"),
    [
        (Constraint(ConstraintKind.JSON_SCHEMA, '{"type": "frobnicate"}'), "Unsupported type"),
        (Constraint.json_schema({"type": "integer", "minimum": 5, "maximum": 1}), "range"),
        (Constraint.json_schema({"$ref": "#/$defs/missing"}), "missing"),
        (Constraint(ConstraintKind.JSON_SCHEMA, "not json"), "JSON"),
        (Constraint(ConstraintKind.REGEX, "(unclosed"), "parenthesis"),
        (Constraint(ConstraintKind.GRAMMAR, "root ::= undefined_rule"), "undefined_rule"),
        (Constraint(ConstraintKind.CHOICE, "[]"), "must not be empty"),
        (Constraint(ConstraintKind.CHOICE, '["a", 1]'), "list of strings"),
        (Constraint.structural_tag({"type": "structural_tag", "format": {"type": "x"}}), "x"),
        (
            Constraint.json_schema({"type": "string", "pattern": "^a+$", "maxLength": 3}),
            "length bound beside 'pattern'",
        ),
        (
            Constraint.structural_tag(
                {
                    "type": "structural_tag",
                    "format": {
                        "type": "json_schema",
                        "json_schema": {"type": "array", "uniqueItems": True},
                    },
                }
            ),
            "'uniqueItems'",
        ),
    ],
)
def test_a_constraint_xgrammar_refuses_is_an_invalid_request(
    engine: TransformersInferenceEngine, constraint: Constraint, reason: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        engine.check_constraint(constraint)
    message = str(info.value)
    assert message.startswith(f"invalid {constraint.kind.value} constraint: ")
    assert reason in message
    assert "\n" not in message
    assert ".cc:" not in message
    assert info.value.param is None
    with pytest.raises(InvalidRequestError):  # generation refuses it before it runs
        asyncio.run(steps(engine, [1, 2], SamplingParams(max_tokens=3, constraint=constraint)))


# -- the grammar engine alone ----------------------------------------------------------------


def accepts(matcher: Any, text: str) -> bool:
    """Whether `text` is a complete match of the matcher's grammar."""
    return bool(matcher.accept_string(text) and matcher.is_completed())


def test_choices_are_escaped_into_literals(grammar: XgrammarGrammarEngine) -> None:
    choices = ['say "hi"', "back\\slash", "tab\there", "bell\x07", "😀 ünï", "", "a|b", "x ::= y"]
    constraint = Constraint(ConstraintKind.CHOICE, json.dumps(choices))
    for text in choices:
        assert accepts(grammar.matcher(constraint), text), text
    for text in ['say "hi', "back\\\\slash", "a", "b", "x", "tab\\there", "😀"]:
        assert not accepts(grammar.matcher(constraint), text), text
    assert choice_grammar('["a", "a"]') == 'root ::= "a"'


def test_json_schemas_compile_to_compact_json(grammar: XgrammarGrammarEngine) -> None:
    """No free whitespace: a model sampling at temperature 1 cannot loop on blanks."""
    constraint = Constraint.json_schema(
        {"type": "object", "properties": {"n": {"type": "integer"}}}
    )
    for text, ok in [('{"n": 1}', True), ('{ "n": 1}', False), ('{"n":  1}', False)]:
        assert accepts(grammar.matcher(constraint), text) is ok, text


def test_the_cache_keeps_the_most_recently_used(tokenizer: Any) -> None:
    small = XgrammarGrammarEngine(tokenizer, len(tokenizer), [2], cache_size=2)
    a, b, c = (Constraint(ConstraintKind.REGEX, p) for p in ("a+", "b+", "c+"))
    for constraint in (a, b, a, c):  # c evicts b, the least recently used
        small.compile(constraint)
    assert small.compiles == 3
    small.compile(a)
    assert small.compiles == 3
    small.compile(b)
    assert small.compiles == 4
    bad = Constraint(ConstraintKind.REGEX, "(")
    for _ in range(2):  # a refusal is remembered too
        with pytest.raises(InvalidRequestError):
            small.check(bad)
    assert small.compiles == 5


def test_the_bitmask_masks_only_its_rows_and_logits_past_the_vocabulary(
    grammar: XgrammarGrammarEngine, tokenizer: Any
) -> None:
    digits = Constraint(ConstraintKind.REGEX, "[0-9]")
    logits = torch.zeros(3, grammar.vocab_size + 64)  # a model whose logits are padded
    mask = grammar.bitmask(4, "cpu")
    earlier = torch.zeros_like(logits)  # a step where rows 0 and 2 were constrained
    mask.apply(earlier, [(0, grammar.matcher(digits)), (2, grammar.matcher(digits))])
    assert bool(torch.isinf(earlier[0]).any())
    mask.apply(logits, [(1, grammar.matcher(digits))])
    assert torch.equal(logits[0], torch.zeros_like(logits[0]))
    assert torch.equal(logits[2], torch.zeros_like(logits[2]))
    allowed = torch.nonzero(logits[1] == 0).flatten().tolist()
    assert allowed
    assert all(i < grammar.vocab_size for i in allowed)
    assert {tokenizer.decode([i]) for i in allowed} <= set("0123456789")
