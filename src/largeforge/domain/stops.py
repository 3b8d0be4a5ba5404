"""Stop sequences over streamed text: hold back what could still become a stop string."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text pieces in order; get back the text that is safe to emit.

    A stop string may span several pieces, so the longest tail that is a prefix of some stop
    string is held back until it is ruled out. Once a stop string appears, everything from it on
    is dropped (the stop text is not returned) and `stopped` becomes true.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Text to emit now; empty while held back or after a stop."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        text = self._pending + piece
        cut = min((i for s in self._stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = self._held_tail(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What was held back, at the end of generation (it did not become a stop string)."""
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest

    def _held_tail(self, text: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[len(text) - size :]):
                    longest = size
                    break
        return longest
