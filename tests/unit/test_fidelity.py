"""Fidelity in the domain: comparing tokenizer facts and greedy answers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain.fidelity import (
    FidelityCheck,
    FidelityReport,
    ProbeAnswer,
    TokenizerFacts,
    compare_answers,
    compare_facts,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAINED = TokenizerFacts(
    chat_template=CHATML,
    bos_token="<|im_start|>",
    bos_token_id=1,
    eos_token="<|im_end|>",
    eos_token_id=2,
    pad_token="<|endoftext|>",
    pad_token_id=0,
    special_tokens=(("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)),
    turn_end_token="<|im_end|>",
    turn_end_token_id=2,
    generation_eos_token_ids=(2,),
    generation_pad_token_id=0,
    generation_bos_token_id=1,
    config_eos_token_ids=(2,),
    token_names=((0, "<|endoftext|>"), (1, "<|im_start|>"), (2, "<|im_end|>")),
)


def fields(trained: TokenizerFacts, actual: TokenizerFacts) -> list[str]:
    return [m.field for m in compare_facts(trained, actual)]


def test_equal_facts_have_no_mismatch() -> None:
    assert compare_facts(TRAINED, TRAINED) == []


def test_generation_eos_that_misses_the_turn_end_names_both_tokens() -> None:
    (mismatch,) = compare_facts(TRAINED, replace(TRAINED, generation_eos_token_ids=(0,)))
    assert mismatch.field == "generation_config.eos_token_id"
    assert mismatch.message == (
        "generation_config.eos_token_id is 0 (<|endoftext|>) but training ended turns with "
        "2 (<|im_end|>)"
    )


def test_generation_eos_may_list_more_ids_than_the_turn_end() -> None:
    assert compare_facts(TRAINED, replace(TRAINED, generation_eos_token_ids=(0, 2))) == []


def test_missing_generation_eos_is_named() -> None:
    (mismatch,) = compare_facts(TRAINED, replace(TRAINED, generation_eos_token_ids=()))
    assert "generation_config.eos_token_id is not set but training ended turns with 2" in str(
        mismatch
    )


def test_changed_template_says_where() -> None:
    changed = CHATML.replace("<|im_end|>\n{% endfor", "[END]\n{% endfor")
    (mismatch,) = compare_facts(TRAINED, replace(TRAINED, chat_template=changed))
    at = CHATML.index("<|im_end|>\n{% endfor")
    assert mismatch.field == "chat_template"
    assert mismatch.message.startswith(
        f"chat_template differs from the one training used (first difference at character {at}: "
        "training had '<|im_end|>"
    )
    assert "\n" not in mismatch.message


def test_missing_special_token_is_named_with_its_id() -> None:
    actual = replace(TRAINED, special_tokens=(("<|endoftext|>", 0), ("<|im_end|>", 2)))
    (mismatch,) = compare_facts(TRAINED, actual)
    assert (mismatch.field, mismatch.message) == (
        "special_tokens",
        "special_tokens: <|im_start|> (id 1) is missing",
    )


def test_moved_and_added_special_tokens_are_named() -> None:
    actual = replace(
        TRAINED,
        special_tokens=(("<|endoftext|>", 0), ("<|im_start|>", 7), ("<|im_end|>", 2), ("<x>", 9)),
    )
    assert [m.message for m in compare_facts(TRAINED, actual)] == [
        "special_tokens: <|im_start|> is id 7 but training used id 1",
        "special_tokens: <x> (id 9) was not there in training",
    ]


def test_pad_token_id_of_generation_config() -> None:
    (mismatch,) = compare_facts(TRAINED, replace(TRAINED, generation_pad_token_id=2))
    assert mismatch.message == (
        "generation_config.pad_token_id is 2 (<|im_end|>) but training used 0 (<|endoftext|>)"
    )


def test_tokenizer_eos_names_token_and_id() -> None:
    actual = replace(TRAINED, eos_token="<|endoftext|>", eos_token_id=0)
    (mismatch,) = compare_facts(TRAINED, actual)
    assert mismatch.message == (
        "eos_token is <|endoftext|> (id 0) but training used <|im_end|> (id 2)"
    )


def test_without_a_turn_end_the_tokenizer_eos_is_the_rule() -> None:
    trained = replace(TRAINED, turn_end_token=None, turn_end_token_id=None)
    (mismatch,) = compare_facts(trained, replace(trained, generation_eos_token_ids=(0,)))
    assert mismatch.field == "generation_config.eos_token_id"


def test_facts_survive_json() -> None:
    import json

    assert TokenizerFacts.from_dict(json.loads(json.dumps(TRAINED.to_dict()))) == TRAINED


# -- properties ------------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=50)
names = st.text(alphabet="abc<>|_", min_size=1, max_size=8)


@st.composite
def consistent_facts(draw: Any) -> TokenizerFacts:
    """Facts whose generation config stops on the token the template ends turns with."""
    special = draw(st.dictionaries(names, ids, min_size=1, max_size=5))
    end_token, end_id = draw(st.sampled_from(sorted(special.items())))
    extra = draw(st.lists(ids, max_size=2))
    return TokenizerFacts(
        chat_template=draw(st.one_of(st.none(), st.text(max_size=40))),
        bos_token=draw(st.one_of(st.none(), names)),
        bos_token_id=draw(st.one_of(st.none(), ids)),
        eos_token=end_token,
        eos_token_id=end_id,
        pad_token=draw(st.one_of(st.none(), names)),
        pad_token_id=draw(st.one_of(st.none(), ids)),
        special_tokens=tuple(sorted(special.items(), key=lambda i: (i[1], i[0]))),
        turn_end_token=end_token,
        turn_end_token_id=end_id,
        generation_eos_token_ids=tuple(dict.fromkeys([end_id, *extra])),
        generation_pad_token_id=draw(st.one_of(st.none(), ids)),
        generation_bos_token_id=draw(st.one_of(st.none(), ids)),
        config_eos_token_ids=draw(st.sampled_from([(), (end_id,)])),
    )


@given(consistent_facts())
def test_equal_consistent_facts_never_mismatch(facts: TokenizerFacts) -> None:
    assert compare_facts(facts, facts) == []
    assert TokenizerFacts.from_dict(facts.to_dict()) == facts


def _other(value: int | None) -> int:
    return 0 if value is None else value + 1


def _changes(facts: TokenizerFacts) -> dict[str, dict[str, Any]]:
    """One change per field, with the mismatch field it must produce."""
    end = facts.turn_end_token_id
    assert end is not None
    return {
        "chat_template": {"chat_template": (facts.chat_template or "") + "!"},
        "bos_token": {"bos_token_id": _other(facts.bos_token_id)},
        "eos_token": {"eos_token": (facts.eos_token or "") + "!"},
        "pad_token": {"pad_token_id": _other(facts.pad_token_id)},
        "turn_end_token": {"turn_end_token_id": end + 100},
        "special_tokens": {"special_tokens": facts.special_tokens[1:]},
        "generation_config.eos_token_id": {
            "generation_eos_token_ids": tuple(i for i in facts.generation_eos_token_ids if i != end)
        },
        "generation_config.pad_token_id": {
            "generation_pad_token_id": _other(facts.generation_pad_token_id)
        },
        "generation_config.bos_token_id": {
            "generation_bos_token_id": _other(facts.generation_bos_token_id)
        },
        "config.eos_token_id": {"config_eos_token_ids": (end + 100,)},
    }


@given(consistent_facts(), st.data())
def test_any_single_changed_field_is_exactly_one_mismatch_naming_it(
    facts: TokenizerFacts, data: Any
) -> None:
    changes = _changes(facts)
    field = data.draw(st.sampled_from(sorted(changes)))
    actual = replace(facts, **changes[field])
    assert fields(facts, actual) == [field]


# -- answers ---------------------------------------------------------------------------------

ANSWER = ProbeAnswer("Hello there.", 4, True, ("Hello", " there", ".", "<|im_end|>"))


def test_equal_answers_compare_equal() -> None:
    result = compare_answers("served_vs_generate", "Hi", ("generate", ANSWER), ("served", ANSWER))
    assert result.mismatch is None
    assert result.note is None


@pytest.mark.parametrize(
    "changed",
    [
        replace(ANSWER, text="Hello here.", tokens=("Hello", " here", ".", "<|im_end|>")),
        replace(ANSWER, completion_tokens=5),
        replace(ANSWER, stopped=False),
    ],
)
def test_text_count_or_stop_differences_are_mismatches(changed: ProbeAnswer) -> None:
    result = compare_answers("served_vs_generate", "Hi", ("generate", ANSWER), ("served", changed))
    assert result.mismatch is not None
    assert result.mismatch.field == "served_vs_generate"
    assert result.mismatch.message.startswith("served_vs_generate: probe 'Hi': served answered")
    assert "but generate answered 'Hello there.' (4 tokens, stopped)" in result.mismatch.message


def test_a_divergence_at_a_near_tie_is_a_note() -> None:
    want = replace(ANSWER, top2_gaps=(3.0, 2e-4, 1.0, 1.0))
    got = replace(
        ANSWER,
        text="Hello here.",
        tokens=("Hello", " here", ".", "<|im_end|>"),
        top2_gaps=(3.0, 3e-4, 1.0, 1.0),
    )
    tied = compare_answers(
        "adapter_vs_merged", "Hi", ("merged", want), ("adapter", got), tie_gap=1e-3
    )
    assert tied.mismatch is None
    assert tied.note is not None
    assert "diverged at token 1" in tied.note
    clear = compare_answers("adapter_vs_merged", "Hi", ("merged", want), ("adapter", got))
    assert clear.mismatch is not None
    assert "first difference at token 1" in str(clear.mismatch)


def test_report_is_ok_only_without_mismatches() -> None:
    (mismatch,) = compare_facts(TRAINED, replace(TRAINED, generation_eos_token_ids=(0,)))
    good = FidelityCheck("static facts", "merged")
    bad = FidelityCheck("static facts", "quantized", (mismatch,))
    assert FidelityReport((good,)).ok
    report = FidelityReport((good, bad))
    assert not report.ok
    assert report.mismatches == (mismatch,)
    assert report.to_dict()["checks"][1]["mismatches"][0]["field"] == (
        "generation_config.eos_token_id"
    )


def test_a_template_that_ends_turns_with_another_token_is_named() -> None:
    actual = replace(TRAINED, turn_end_token="<|endoftext|>")
    (mismatch,) = compare_facts(TRAINED, actual)
    assert mismatch.message == (
        "the chat template ends assistant turns with <|endoftext|> (id 2) but training ended "
        "them with <|im_end|> (id 2)"
    )
