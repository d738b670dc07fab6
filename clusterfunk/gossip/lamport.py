"""Lamport clocks (Serf keeps three: membership, user events, queries)."""

from __future__ import annotations


class LamportClock:
    """A Lamport logical clock.

    Invariant: ``time`` never decreases; after :meth:`witness` of ``t`` it exceeds
    ``t``, so an event stamped later is ordered after everything seen.
    """

    __slots__ = ("time",)

    def __init__(self, time: int = 0) -> None:
        self.time = time

    def increment(self) -> int:
        """Stamp a new local event: returns the stamp and advances the clock."""
        t = self.time
        self.time = t + 1
        return t

    def witness(self, t: int) -> None:
        """Rule (Lamport): on seeing a remote stamp ``t``, move past it."""
        if t >= self.time:
            self.time = t + 1
