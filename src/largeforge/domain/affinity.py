"""Session affinity: a session key pins a conversation to one replica of each expert.

A pin lasts while the session keeps talking (`ttl_s` since its last use) and the table holds
at most `max_sessions` keys, the least recently used going first. The router reads the pin
before balancing and writes it after an answer; a pin that names another replica than the one
that answered is a move (the pinned replica failed or left), which the router reports.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AffinityPolicy:
    ttl_s: float = 3600.0
    max_sessions: int = 100_000

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ValueError(f"AffinityPolicy.ttl_s must be > 0, got {self.ttl_s!r}")
        if self.max_sessions < 1:
            raise ValueError(f"AffinityPolicy.max_sessions must be >= 1, got {self.max_sessions}")


class SessionPins:
    """(session, expert) -> replica name, with a time to live and a size bound. Thread-safe."""

    def __init__(
        self, policy: AffinityPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or AffinityPolicy()
        self._clock = clock
        self._pins: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str, expert: str) -> str | None:
        """The replica the session is pinned to for `expert`, unless the pin expired."""
        key = (session, expert)
        with self._lock:
            entry = self._pins.get(key)
            if entry is None:
                return None
            replica, used = entry
            if self._clock() - used > self.policy.ttl_s:
                del self._pins[key]
                return None
            return replica

    def pin(self, session: str, expert: str, replica: str) -> str | None:
        """Pin the session to `replica`; returns the replica it moved from (None if it did not
        move: a new session, the same replica, or an expired pin)."""
        key = (session, expert)
        now = self._clock()
        with self._lock:
            entry = self._pins.pop(key, None)
            self._pins[key] = (replica, now)
            while len(self._pins) > self.policy.max_sessions:
                self._pins.popitem(last=False)
        if entry is None or entry[0] == replica or now - entry[1] > self.policy.ttl_s:
            return None
        return entry[0]

    def __len__(self) -> int:
        return len(self._pins)
