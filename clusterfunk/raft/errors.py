"""Errors raised by the Raft core and its storage.

API errors (raised synchronously by :class:`~clusterfunk.raft.core.RaftCore` calls) all
derive from :class:`RaftError`. :class:`StorageCorrupt` is raised when a store's content
is damaged or inconsistent: the node must stop; nothing is repaired silently.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of the errors the Raft API raises."""


class NotLeader(RaftError):
    """This server is not the leader. ``leader_id`` / ``leader_address`` name the
    current leader when known (``None`` otherwise), so a client can redirect."""

    def __init__(self, leader_id: str | None, leader_address: str | None, why: str = "") -> None:
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.why = why
        msg = f"not the leader (leader: {leader_id or 'unknown'}"
        if leader_address:
            msg += f" at {leader_address}"
        msg += ")"
        if why:
            msg += f": {why}"
        super().__init__(msg)


class ProposalTooLarge(RaftError):
    """A proposed command exceeds ``RaftConfig.max_proposal_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"proposal of {size} bytes exceeds the limit of {limit} bytes")


class ConfigChangeInProgress(RaftError):
    """A membership change was asked for while another one is uncommitted (or before the
    leader has committed an entry of its own term)."""


class UnknownServer(RaftError):
    """A server id that is not part of the configuration (or is not suitable)."""


class LeadershipLost(RaftError):
    """The leader lost its leadership before the request completed; the outcome of a
    proposal is then unknown to this server."""


class StorageCorrupt(Exception):
    """The durable state is damaged or inconsistent (gaps, term regressions, bad
    checksums, a commit index beyond the log, an unreadable file). The node must not
    start; an operator has to look at it. Never caught and repaired silently."""
