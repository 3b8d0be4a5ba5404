"""split_examples: a deterministic partition with the requested validation share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain.datasets import split_examples
from tests.conftest import make_example


@given(n=st.integers(0, 60), val_size=st.floats(0.0, 0.9), seed=st.integers(0, 2**31))
def test_split_is_a_deterministic_partition(n: int, val_size: float, seed: int) -> None:
    examples = tuple(make_example(f"q{i}", f"a{i}") for i in range(n))
    train, val = split_examples(examples, val_size, seed)
    assert sorted(map(id, train + val)) == sorted(map(id, examples))
    assert (train, val) == split_examples(examples, val_size, seed)
    if n >= 2 and val_size > 0:
        assert 1 <= len(val) <= n - 1
        assert len(train) >= 1
    else:
        assert val == ()
