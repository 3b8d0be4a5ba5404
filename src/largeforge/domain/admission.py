"""Admission to an engine's batch: which new sequence may start or wait, and which is refused.

An engine runs at most `max_num_seqs` sequences at once. A sequence counts as *waiting* only
while every slot is taken: a burst that arrives between two scheduler steps while slots are
free is not waiting, it is about to run. `max_queue` bounds the waiting ones; 0 means no waiting
line (a sequence starts at once or is refused), and an engine with a free slot never refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from largeforge.domain.errors import EngineOverloadedError


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The slots of an engine's batch and the length of its waiting line."""

    max_num_seqs: int
    max_queue: int

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue}")

    def running(self, in_flight: int) -> int:
        """How many of `in_flight` admitted sequences hold (or are about to take) a slot."""
        return min(in_flight, self.max_num_seqs)

    def waiting(self, in_flight: int) -> int:
        """How many of `in_flight` admitted sequences wait because no slot is free."""
        return max(0, in_flight - self.max_num_seqs)

    def admits(self, in_flight: int) -> bool:
        """Whether one more sequence may join `in_flight` admitted ones (running or waiting)."""
        return in_flight < self.max_num_seqs or self.waiting(in_flight) < self.max_queue

    def admit(self, in_flight: int) -> None:
        """Raise `EngineOverloadedError` (HTTP 429) unless one more sequence may join."""
        if not self.admits(in_flight):
            waiting = self.waiting(in_flight)
            line = "no waiting line" if self.max_queue == 0 else f"queue size {self.max_queue}"
            raise EngineOverloadedError(
                f"the server is busy: all {self.max_num_seqs} batch slots are taken and "
                f"{waiting} requests are waiting ({line}); retry shortly"
            )
