"""Lifeguard's Local Health Multiplier ("awareness").

A node that misses acks, gets no nacks from its indirect probers, or has to refute
a suspicion about itself is probably the slow one. It then stretches its own probe
interval and timeouts instead of accusing others.

Invariant: ``0 <= score <= max_multiplier - 1``; timeouts are multiplied by
``score + 1``.
"""

from __future__ import annotations


class Awareness:
    """The local health score of this node (0 is healthy)."""

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("awareness max multiplier must be >= 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Rule (Lifeguard LHM): add ``delta`` to the score, clamped to
        [0, max_multiplier - 1]. Returns the new score."""
        self.score = clamp_score(self.score + delta, self.max_multiplier)
        return self.score

    def scale_timeout(self, timeout: float) -> float:
        """Rule (Lifeguard LHM): a timeout is stretched by ``score + 1``."""
        return scale_timeout(timeout, self.score)


def clamp_score(score: int, max_multiplier: int) -> int:
    """The score kept within [0, max_multiplier - 1]."""
    return max(0, min(score, max_multiplier - 1))


def scale_timeout(timeout: float, score: int) -> float:
    """Rule (Lifeguard LHM): timeout x (score + 1)."""
    return timeout * (score + 1)


def probe_failure_delta(expected_nacks: int, nacks: int) -> int:
    """Rule (Lifeguard LHM, failed probe): a probe that got no ack raises the score.

    With indirect probers that promised nacks, every missing nack counts once (a
    missing nack means *our* messages are not getting through); with no indirect
    prober there is nothing to compare, so the failure counts once.
    """
    if expected_nacks > 0:
        return max(0, expected_nacks - nacks)
    return 1


#: Rule (Lifeguard LHM): a probe acked in time lowers the score by one.
PROBE_SUCCESS_DELTA = -1
#: Rule (Lifeguard LHM): having to refute a suspicion about ourselves raises it by one.
REFUTE_DELTA = 1
