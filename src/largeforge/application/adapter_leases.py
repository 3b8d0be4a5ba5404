"""Which served LoRA adapters requests are using, so an unload can wait for them to finish."""

from __future__ import annotations

import asyncio
from collections import Counter


class AdapterLeases:
    """Counts the requests generating with each adapter (on the event loop's thread).

    A request takes a lease before it touches the engine and gives it back when it ends;
    `drained` waits until an adapter has no lease left.
    """

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._idle: dict[str, asyncio.Event] = {}

    def take(self, adapter: str) -> None:
        self._held[adapter] += 1
        self._event(adapter).clear()

    def give_back(self, adapter: str) -> None:
        self._held[adapter] -= 1
        if self._held[adapter] <= 0:
            del self._held[adapter]
            self._event(adapter).set()

    def held(self, adapter: str) -> int:
        return self._held[adapter]

    async def drained(self, adapter: str, timeout_s: float) -> bool:
        """Wait until no request uses `adapter` (True), or `timeout_s` passed (False)."""
        if not self._held[adapter]:
            return True
        try:
            await asyncio.wait_for(self._event(adapter).wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _event(self, adapter: str) -> asyncio.Event:
        event = self._idle.get(adapter)
        if event is None:
            event = self._idle[adapter] = asyncio.Event()
            if not self._held[adapter]:
                event.set()
        return event
