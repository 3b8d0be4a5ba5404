"""Engine admission (`AdmissionLimits`) and what a busy or stopping engine answers over HTTP."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient

from largeforge.domain.admission import AdmissionLimits
from largeforge.domain.errors import EngineOverloadedError, EngineUnavailableError
from largeforge.domain.generation import SamplingParams, TokenStep
from largeforge.entrypoints.http.app import create_app
from largeforge.entrypoints.http.errors import describe
from tests.unit.test_http_api import assert_openai_error, chat_body


def test_an_idle_engine_admits_even_without_a_waiting_line() -> None:
    assert AdmissionLimits(max_num_seqs=1, max_queue=0).admits(0)
    AdmissionLimits(max_num_seqs=1, max_queue=0).admit(0)


def test_no_waiting_line_admits_while_a_slot_is_free_and_refuses_when_all_are_taken() -> None:
    limits = AdmissionLimits(max_num_seqs=4, max_queue=0)
    assert [limits.admits(n) for n in range(6)] == [True, True, True, True, False, False]
    with pytest.raises(
        EngineOverloadedError, match=r"all 4 batch slots are taken.*no waiting line"
    ):
        limits.admit(4)


def test_a_burst_between_two_steps_is_not_waiting_while_slots_are_free() -> None:
    limits = AdmissionLimits(max_num_seqs=8, max_queue=1)
    assert all(limits.admits(n) for n in range(8))  # 8 arrivals, none of them waiting
    assert [limits.waiting(n) for n in range(8)] == [0] * 8
    assert limits.admits(8)  # the 9th waits: the line holds one
    assert not limits.admits(9)


def test_running_sequences_do_not_count_against_the_queue() -> None:
    limits = AdmissionLimits(max_num_seqs=4, max_queue=1)
    assert limits.waiting(4) == 0
    assert limits.running(4) == 4
    assert limits.admits(4)  # four running, nobody waiting: one may wait
    assert limits.waiting(5) == 1
    with pytest.raises(EngineOverloadedError, match=r"1 requests are waiting \(queue size 1\)"):
        limits.admit(5)


@pytest.mark.parametrize(("seqs", "queue"), [(0, 1), (-1, 0), (1, -1)])
def test_impossible_limits_are_refused(seqs: int, queue: int) -> None:
    with pytest.raises(ValueError, match=r"max_num_seqs|max_queue"):
        AdmissionLimits(seqs, queue)


EVENTS = st.lists(st.sampled_from(["arrive", "step", "finish"]), max_size=80)


@given(st.integers(1, 6), st.integers(0, 4), EVENTS)
def test_a_scheduler_under_the_rule_never_holds_more_waiting_than_max_queue(
    max_num_seqs: int, max_queue: int, events: list[str]
) -> None:
    """A model scheduler: arrivals join a line the next step drains into free slots."""
    limits = AdmissionLimits(max_num_seqs, max_queue)
    running, line = 0, 0
    for event in events:
        if event == "arrive":
            admitted = limits.admits(running + line)
            if running + line < max_num_seqs:  # a slot is free (an idle engine too)
                assert admitted, "refused although a slot was free"
            if admitted:
                line += 1
            else:
                assert running + line - max_num_seqs >= max_queue  # the line really is full
        elif event == "step":
            moved = min(max_num_seqs - running, line)
            running, line = running + moved, line - moved
            assert line <= max_queue  # only requests with no free slot are left waiting
            assert line == limits.waiting(running + line)
            if max_queue == 0:
                assert line == 0
        elif running:
            running -= 1
        assert limits.running(running + line) + limits.waiting(running + line) == running + line


def test_shutting_down_is_503_with_retry_after_and_overload_is_429() -> None:
    status, body, headers = describe(EngineUnavailableError("shutting down", retry_after=7))
    assert (status, headers) == (503, {"Retry-After": "7"})
    assert body["error"]["type"] == "service_unavailable"
    assert body["error"]["code"] == "engine_unavailable"
    status, _body, headers = describe(EngineOverloadedError("busy", retry_after=2))
    assert (status, headers) == (429, {"Retry-After": "2"})


def test_an_engine_shutting_down_answers_503_over_http(
    container: Any, fakes: dict[str, Any]
) -> None:
    async def shutting_down(
        prompt_ids: Sequence[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[TokenStep, None]:
        raise EngineUnavailableError("the engine is shutting down", retry_after=5)
        yield  # an async generator, as engines are

    fakes["engine"].generate = shutting_down
    with TestClient(create_app(container, load_in_background=False)) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json=chat_body(stream=stream))
            error = assert_openai_error(response, 503)
            assert error["code"] == "engine_unavailable"
            assert "shutting down" in error["message"]
            assert response.headers["retry-after"] == "5"
