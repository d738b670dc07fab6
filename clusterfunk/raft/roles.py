"""The roles of a Raft server, as one enum shared by the core and its readers.

``Role`` is a :class:`enum.StrEnum`: each member *is* its string, so the values
written to traces (``raft.role``, docs/trace.md) and compared by readers of a trace
stay exactly ``follower``, ``precandidate``, ``candidate``, ``leader`` and
``nonvoter``. Code compares roles with these members, never with string literals.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """The role of one Raft server (Raft paper 5.1, plus pre-vote and non-voters)."""

    FOLLOWER = "follower"
    PRECANDIDATE = "precandidate"  # pre-vote (dissertation 9.6)
    CANDIDATE = "candidate"
    LEADER = "leader"
    NONVOTER = "nonvoter"  # any server that is not a voter of its configuration

    @property
    def is_voter(self) -> bool:
        """A voter of its configuration: follower, (pre)candidate or leader."""
        return self is not Role.NONVOTER

    @property
    def campaigning(self) -> bool:
        """An election is under way on this server (pre-vote or vote)."""
        return self is Role.PRECANDIDATE or self is Role.CANDIDATE


FOLLOWER = Role.FOLLOWER
PRECANDIDATE = Role.PRECANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER
NONVOTER = Role.NONVOTER
