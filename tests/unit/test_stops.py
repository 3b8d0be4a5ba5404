"""`StopMatcher`: streamed stop strings behave exactly like cutting the whole text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from largeforge.domain.stops import StopMatcher

ALPHABET = st.text(alphabet="abc ", max_size=6)


def cut_whole(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@given(
    pieces=st.lists(ALPHABET, max_size=12),
    stops=st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), max_size=3),
)
def test_streamed_output_equals_cutting_the_joined_text(
    pieces: list[str], stops: list[str]
) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces)
    if not matcher.stopped:
        out += matcher.flush()
    assert (out, matcher.stopped) == cut_whole("".join(pieces), stops)


def test_text_that_may_start_a_stop_is_held_back_until_ruled_out() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("hello E") == "hello "
    assert matcher.feed("N") == ""
    assert matcher.feed("X") == "ENX"
    assert matcher.feed("..EN") == ".."
    assert matcher.feed("D and more") == ""
    assert matcher.stopped
