"""A SIGTERM that lands inside an import or a library's except-clause is still the stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from largeforge.adapters.system.signals import StopRequested, stop_requested
from largeforge.adapters.trl.stack import stop_wins


@pytest.fixture
def stop() -> Iterator[None]:
    stop_requested.set()
    yield
    stop_requested.clear()


@stop_wins
def train_failing_with(exc: Exception) -> None:
    raise exc


def test_an_error_raised_once_a_stop_was_requested_is_the_stop(stop: None) -> None:
    swallowed = ImportError("training needs torch ... (None is missing)")
    with pytest.raises(StopRequested) as raised:
        train_failing_with(swallowed)
    assert raised.value.__cause__ is swallowed


def test_without_a_stop_request_the_error_is_the_error() -> None:
    assert not stop_requested.is_set()
    with pytest.raises(ImportError):
        train_failing_with(ImportError("missing"))


@stop_wins
def trained() -> str:
    return "result"


def test_a_train_that_returns_is_untouched(stop: None) -> None:
    assert trained() == "result"
