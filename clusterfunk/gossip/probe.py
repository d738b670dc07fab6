"""SWIM failure detection bookkeeping: probe target order, in-flight probes, relays.

Rules kept here:

* Round-robin probing over a shuffled list (SWIM 4.3): every member is probed
  once per pass; the list is reshuffled at the end of each pass and newcomers are
  inserted at a random position, which bounds the time to first probe of a failed
  member to ``2n - 1`` protocol periods.
* A probe is direct first (ping -> ack within the probe timeout), then indirect
  (ping-req through k members, each promising a nack), and fails at the end of
  the protocol period if no ack arrived.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs


class ProbeRing:
    """The shuffled round-robin order of probe targets."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.order: list[str] = []
        self.pos = 0

    def add(self, name: str) -> None:
        """Rule (memberlist): a new member goes to a random position of the ring, so
        that it is probed within one pass without disturbing the order of others."""
        i = int(self.rng.random() * (len(self.order) + 1))  # cheaper than randrange
        self.order.insert(i, name)
        if i < self.pos:
            self.pos += 1

    def next_target(self, members: list[str], accept: Callable[[str], bool]) -> str | None:
        """Rule (SWIM round-robin): the next acceptable member in ring order; at the end
        of a pass the ring is rebuilt from ``members`` and reshuffled. Entries no
        longer acceptable (dead, reaped, ourselves) are skipped."""
        for _ in range(2):
            order = self.order
            while self.pos < len(order):
                name = order[self.pos]
                self.pos += 1
                if accept(name):
                    return name
            self.order = list(members)
            self.rng.shuffle(self.order)
            self.pos = 0
        return None


@attrs.define(slots=True)
class Probe:
    """The probe in flight (at most one per protocol period)."""

    seq: int
    target: str
    target_addr: str
    sent: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    acked: bool = False


@attrs.define(slots=True)
class Relay:
    """An indirect ping this node performs on behalf of ``origin``."""

    origin_addr: str
    origin_seq: int
    target: str
    nack: bool
