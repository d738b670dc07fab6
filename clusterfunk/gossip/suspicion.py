"""Lifeguard's Local-Health-Aware Suspicion (LHA-Suspicion).

A suspicion starts with a long timeout (``max``) and shrinks toward ``min`` as
independent confirmations (suspect messages from other members) arrive:

    remaining(c) = max - (max - min) * ln(c + 1) / ln(k + 1)     (never below min)

where ``k`` is the number of confirmations expected. All formulas are pure
functions; :class:`Suspicion` holds one member's timer state.

Suspicion refresh (ours): a suspicion is announced when it starts, and that
announcement is spent after ``retransmit_limit`` transmissions. If the group was
split at the time (the suspect on the other side of a partition), nobody who can
reach the suspect ever heard of it, and the timer runs out after the partition
has healed: a false death. So every holder re-announces a pending suspicion at
the refresh points ``deadline - j x min`` (j >= 1, after the start): the last
one comes one min timeout before the member is declared dead, which is the time
the suspect then has to hear of it and refute. And the verdict never comes
sooner than one min timeout after the last announcement: a holder that was
stalled past its refresh points (a paused process) announces it on waking and
waits that long, instead of declaring a member dead that never heard of it.
"""

from __future__ import annotations

import math


def suspicion_min_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """Rule (memberlist suspicionTimeout): min = suspicion_mult x max(1, log10 n) x
    probe_interval."""
    node_scale = max(1.0, math.log10(max(1, n)))
    return suspicion_mult * node_scale * probe_interval


def suspicion_max_timeout(max_timeout_mult: int, min_timeout: float) -> float:
    """Rule (Lifeguard): max = SuspicionMaxTimeoutMult x min."""
    return max_timeout_mult * min_timeout


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """Rule (memberlist): k = suspicion_mult - 2 independent confirmations are
    expected, or none when the cluster is too small to provide them (n - 2 < k)."""
    k = suspicion_mult - 2
    if n - 2 < k:
        return 0
    return max(0, k)


def remaining_timeout(confirmations: int, k: int, min_timeout: float, max_timeout: float) -> float:
    """Rule (Lifeguard LHA-Suspicion): the total timeout after ``confirmations``
    independent confirmations: max - (max - min) x ln(c + 1) / ln(k + 1), floored at
    min. With k = 0 there is nothing to wait for: min."""
    if k <= 0:
        return min_timeout
    frac = math.log(confirmations + 1) / math.log(k + 1)
    t = max_timeout - (max_timeout - min_timeout) * frac
    return max(min_timeout, t)


class Suspicion:
    """The suspicion timer for one member.

    Invariants: ``start`` is fixed; ``confirmers`` never contains the same member
    twice (the first accuser is in it but does not count as a confirmation); the
    Lifeguard deadline only moves earlier, never below ``start + min_timeout``;
    ``start <= last_call``, ``last_call`` only moves forward, and the deadline is
    never before ``last_call + min_timeout``.
    """

    __slots__ = (
        "accuser",
        "confirmers",
        "incarnation",
        "k",
        "last_call",
        "max_timeout",
        "min_timeout",
        "n",
        "start",
    )

    def __init__(
        self,
        start: float,
        incarnation: int,
        accuser: str,
        k: int,
        min_timeout: float,
        max_timeout: float,
    ) -> None:
        self.start = start
        self.incarnation = incarnation
        self.accuser = accuser
        self.last_call = start  # when it was last announced (see next_refresh)
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.confirmers: set[str] = {accuser}
        self.n = 0  # independent confirmations so far

    def confirm(self, accuser: str) -> bool:
        """Rule (Lifeguard): count a confirmation from a member not yet heard from.
        Returns True if it was new (and so is worth re-gossiping)."""
        if self.n >= self.k or accuser in self.confirmers:
            return False
        self.confirmers.add(accuser)
        self.n += 1
        return True

    @property
    def lifeguard_deadline(self) -> float:
        """Start plus the Lifeguard timeout for the confirmations so far."""
        return self.start + remaining_timeout(self.n, self.k, self.min_timeout, self.max_timeout)

    @property
    def deadline(self) -> float:
        """Rule (ours, suspicion refresh): local time at which the member is declared
        dead if nobody refutes: the Lifeguard deadline, but never sooner than one
        min timeout after the last announcement."""
        return max(self.lifeguard_deadline, self.last_call + self.min_timeout)

    def next_refresh(self) -> float | None:
        """Rule (ours, suspicion refresh): the next time this suspicion is announced
        again: the earliest point ``deadline - j x min_timeout`` (j >= 1) after the
        last announcement, or None when the next thing due is the deadline. The
        points follow the deadline when confirmations move it."""
        d = self.lifeguard_deadline
        m = self.min_timeout
        after = self.last_call + 1e-9
        if d - m <= after:
            return None
        j = max(1, math.ceil((d - after) / m) - 1)  # the largest j with d - j*m > after
        while j > 1 and d - j * m <= after:
            j -= 1
        return d - j * m

    def next_wake(self) -> float:
        """When the holder must look at this suspicion again: the next refresh point
        or the deadline, whichever comes first."""
        r = self.next_refresh()
        return self.deadline if r is None else r
