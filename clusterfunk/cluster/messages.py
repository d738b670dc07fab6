"""Wire messages of the cluster layer (tags 192-223).

* 192-199: coordination-port messages (``Ack``, ``LeaveRequest``).
* 200-203: command entries of the Raft cluster log (``Bootstrap``,
  ``ProposedShardMap``, ``ShardMapCommitted``, ``VoterTarget``), wire-encoded so that
  decoding a corrupt entry raises only :class:`clusterfunk.wire.WireError`.
"""

from __future__ import annotations

import hashlib

import attrs

from clusterfunk import wire

#: Length (hex characters) of a shard map digest in traces and results.
DIGEST_CHARS = 32


def map_digest(blob: bytes) -> str:
    """The digest of an encoded shard map: sha256, first 32 hex characters."""
    return hashlib.sha256(blob).hexdigest()[:DIGEST_CHARS]


@wire.message(192)
@attrs.frozen
class Ack:
    """A node applied the proposal at ``index`` (sent to the proposal's ``ack`` address)."""

    node: str
    index: int


@wire.message(193)
@attrs.frozen
class LeaveRequest:
    """A member stopping gracefully asks the leader to remove it from Raft first (so a
    two-voter configuration never waits for a server that is gone)."""

    node: str


@wire.message(200)
@attrs.frozen
class Bootstrap:
    """First entry a cluster's first leader writes: the creation time (Unix seconds)."""

    created: float


@wire.message(201)
@attrs.frozen
class ProposedShardMap:
    """A proposed shard map. ``nodes`` is sorted and equals the map's nodes; ``ack`` is
    the proposing leader's coordination address; ``moved`` counts shards whose owner
    changes against the committed map."""

    leader: str
    term: int
    ack: str
    nodes: tuple[str, ...]
    moved: int
    blob: bytes


@wire.message(202)
@attrs.frozen
class ShardMapCommitted:
    """Every node of the proposal at ``proposal`` acked it: that map is now in force."""

    proposal: int
    nodes: tuple[str, ...]


@wire.message(203)
@attrs.frozen
class VoterTarget:
    """An operator set the target number of Raft voters (``ctl voters N``): every node
    applies it, and every leader from then on keeps that many voters (instead of its
    own ``CoordinatorConfig.voters``)."""

    voters: int
