"""Majority math.

Invariant: any two majorities of the same voter set intersect; that is what makes a
commit index computed here safe (with the Figure 8 term check done by the caller).
"""

from __future__ import annotations

from collections.abc import Iterable


def quorum_size(voters: int) -> int:
    """Smallest majority of ``voters`` servers (0 voters -> 1: nothing can be decided)."""
    return voters // 2 + 1


def quorum_index(values: Iterable[int]) -> int:
    """The largest N such that a majority of ``values`` are >= N (0 if empty).

    Used for the commit index (values = match indexes of the voters, the leader's own
    last index included if it is a voter) and for read/heartbeat acknowledgements.
    """
    vals = sorted(values, reverse=True)
    if not vals:
        return 0
    return vals[len(vals) // 2]  # position quorum_size(len(vals)) - 1, inlined (hot path)


def has_quorum(granted: int, voters: int) -> bool:
    return voters > 0 and granted >= quorum_size(voters)
