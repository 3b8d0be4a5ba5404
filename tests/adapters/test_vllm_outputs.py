"""vLLM's log-probabilities read without vLLM: every prompt token keeps its entry, or it fails.

The inputs have the shapes vLLM's `RequestOutput` carries: `prompt_logprobs` is one
{token id: Logprob} map per prompt token, the first None; a completion's `logprobs` one map per
generated token. lm-evaluation-harness sums these entries, so one lost entry changes a score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from largeforge.adapters.vllm.outputs import prompt_entries, step_entries
from largeforge.domain.errors import EngineFaultError, LargeForgeError
from largeforge.entrypoints.http.errors import describe


@dataclass(frozen=True)
class Logprob:
    """vLLM's `Logprob` (the fields the adapter reads)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def texts(token: int) -> str:
    return f"<{token}>"


def scored(ids: list[int]) -> list[dict[int, Logprob] | None]:
    """vLLM-shaped prompt logprobs: each prompt token, plus token 0 as a likelier alternative."""
    return [None] + [
        {0: Logprob(-0.1), token: Logprob(-1.0 - i)} for i, token in enumerate(ids[1:])
    ]


IDS = [5, 7, 9, 11, 13]


def test_every_prompt_token_gets_its_own_entry_in_order() -> None:
    entries = prompt_entries(IDS, scored(IDS), 1, texts)
    assert [e.token_id for e in entries] == IDS
    assert [e.token for e in entries] == [texts(t) for t in IDS]
    assert entries[0].logprob is None
    assert [e.logprob for e in entries[1:]] == [-1.0, -2.0, -3.0, -4.0]
    assert all(e.top == (("<0>", -0.1),) for e in entries[1:])
    assert math.isclose(sum(e.logprob or 0.0 for e in entries), -10.0)


def test_one_missing_prompt_position_is_an_engine_fault_not_a_shorter_list() -> None:
    with pytest.raises(EngineFaultError, match="4 prompt log-probabilities for a prompt of 5"):
        prompt_entries(IDS, scored(IDS)[:-1], 1, texts)


def test_no_prompt_logprobs_at_all_is_an_engine_fault() -> None:
    with pytest.raises(EngineFaultError, match="none prompt log-probabilities"):
        prompt_entries(IDS, None, 0, texts)


def test_a_position_without_the_prompt_token_is_an_engine_fault() -> None:
    positions = scored(IDS)
    positions[2] = {0: Logprob(-0.1)}  # vLLM left out the prompt token itself
    with pytest.raises(EngineFaultError, match=r"prompt position 2: .* token id 9"):
        prompt_entries(IDS, positions, 1, texts)
    positions[2] = None
    with pytest.raises(EngineFaultError, match="prompt position 2"):
        prompt_entries(IDS, positions, 1, texts)


def test_generated_tokens_need_one_logprob_each_when_asked() -> None:
    tokens = [3, 4]
    options = [{3: Logprob(-0.5), 8: Logprob(-0.2)}, {4: Logprob(-0.7)}]
    entries = step_entries(tokens, options, 1, texts)
    assert [(e.token_id, e.logprob, e.top) for e in entries if e] == [
        (3, -0.5, (("<8>", -0.2),)),
        (4, -0.7, (("<4>", -0.7),)),
    ]
    assert step_entries(tokens, None, None, texts) == [None, None]
    assert step_entries([], None, 1, texts) == []  # a delta without new tokens
    with pytest.raises(EngineFaultError, match="1 log-probabilities for 2 generated tokens"):
        step_entries(tokens, options[:1], 1, texts)
    with pytest.raises(EngineFaultError, match="none log-probabilities"):
        step_entries(tokens, None, 0, texts)


def test_an_engine_fault_leaves_the_server_as_an_openai_server_error() -> None:
    status, body, _headers = describe(EngineFaultError("vLLM returned 4 prompt log-probabilities"))
    assert issubclass(EngineFaultError, LargeForgeError)
    assert status == 500
    assert body["error"]["type"] == "server_error"
    assert "4 prompt log-probabilities" in body["error"]["message"]
