"""The replicated cluster state machine (the Raft log's command entries).

Applied in log order on every server, deterministic: the same entries give the same
state and the same snapshot bytes everywhere. State:

* ``created``: the cluster creation time (first ``Bootstrap`` entry), or None;
* ``proposal``: the latest ``ProposedShardMap`` not yet committed (loaded, validated,
  never used for lookups: a proposal is not in force before it is committed);
* ``committed``: the map in force, set when a ``ShardMapCommitted`` names the
  current proposal;
* ``voters``: the operator's voter target (the last ``VoterTarget`` entry), or None
  (then each leader uses its own configured ``voters``).

Invariants: a commit only ever installs the proposal it names, and only if that
proposal is the current one (a stale or unknown commit is ignored and counted);
the committed map's nodes equal the nodes of its entry. Bad entries (undecodable,
inconsistent) are ignored identically on every server and never raise.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import msgpack

from clusterfunk import wire
from clusterfunk.cluster.messages import (
    Bootstrap,
    ProposedShardMap,
    ShardMapCommitted,
    VoterTarget,
    map_digest,
)
from clusterfunk.sharding import ShardMap, ShardMapDecodeError

#: 2 adds the voter target; a version 1 snapshot (no target) still restores
SNAPSHOT_VERSION = 2


@attrs.frozen
class MapRecord:
    """One shard map entry as the state machine keeps it."""

    index: int
    leader: str
    term: int
    ack: str
    nodes: tuple[str, ...]
    moved: int
    blob: bytes
    digest: str


@attrs.frozen
class BootstrapApplied:
    index: int
    created: float
    first: bool


@attrs.frozen
class ProposalApplied:
    index: int
    record: MapRecord


@attrs.frozen
class CommitApplied:
    index: int
    record: MapRecord


@attrs.frozen
class VotersApplied:
    index: int
    voters: int


class IgnoreReason(enum.StrEnum):
    """Why an entry of the cluster log was ignored (the same on every server)."""

    UNDECODABLE_ENTRY = "undecodable entry"
    UNKNOWN_ENTRY = "unknown entry type"
    UNDECODABLE_MAP = "undecodable shard map"
    NODES_MISMATCH = "proposal nodes differ from its map"
    STALE_COMMIT = "commit of a proposal that is not current"
    BAD_VOTER_TARGET = "voter target below 1"


@attrs.frozen
class Ignored:
    index: int
    reason: IgnoreReason


ClusterResult = BootstrapApplied | ProposalApplied | CommitApplied | VotersApplied | Ignored


class ClusterStateMachine:
    """The Raft state machine of the cluster log (see the module docstring)."""

    def __init__(self) -> None:
        self.created: float | None = None
        self.proposal: MapRecord | None = None
        self.committed: MapRecord | None = None
        self.voters: int | None = None
        self.ignored: dict[IgnoreReason, int] = {}
        self._proposal_map: ShardMap | None = None
        self._committed_map: ShardMap | None = None

    # -- queries -----------------------------------------------------------------

    def committed_map(self) -> ShardMap | None:
        """The decoded committed map (decoded once, then cached)."""
        if self.committed is None:
            return None
        if self._committed_map is None:
            self._committed_map = ShardMap.decode(self.committed.blob)
        return self._committed_map

    def proposed_map(self) -> ShardMap | None:
        if self.proposal is None:
            return None
        if self._proposal_map is None:
            self._proposal_map = ShardMap.decode(self.proposal.blob)
        return self._proposal_map

    # -- StateMachine --------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> ClusterResult:
        try:
            entry = wire.decode(command)
        except wire.WireError:
            return self._ignore(index, IgnoreReason.UNDECODABLE_ENTRY)
        if isinstance(entry, ProposedShardMap):
            return self._apply_proposal(index, entry)
        if isinstance(entry, ShardMapCommitted):
            return self._apply_commit(index, entry)
        if isinstance(entry, Bootstrap):
            first = self.created is None
            if first:
                self.created = entry.created
            return BootstrapApplied(index, self.created if self.created is not None else 0.0, first)
        if isinstance(entry, VoterTarget):
            return self._apply_voters(index, entry)
        return self._ignore(index, IgnoreReason.UNKNOWN_ENTRY)

    def _apply_voters(self, index: int, e: VoterTarget) -> ClusterResult:
        """A voter target (>= 1) replaces any earlier one."""
        if type(e.voters) is not int or e.voters < 1:
            return self._ignore(index, IgnoreReason.BAD_VOTER_TARGET)
        self.voters = e.voters
        return VotersApplied(index, e.voters)

    def _apply_proposal(self, index: int, e: ProposedShardMap) -> ClusterResult:
        """A proposal replaces any earlier uncommitted one; it is loaded (decoded and
        checked against its node list) but not put in force."""
        try:
            m = ShardMap.decode(e.blob)
        except ShardMapDecodeError:
            return self._ignore(index, IgnoreReason.UNDECODABLE_MAP)
        if tuple(m.nodes) != tuple(e.nodes):
            return self._ignore(index, IgnoreReason.NODES_MISMATCH)
        rec = MapRecord(index, e.leader, e.term, e.ack, tuple(e.nodes), e.moved, e.blob,
                        map_digest(e.blob))
        self.proposal = rec
        self._proposal_map = m
        return ProposalApplied(index, rec)

    def _apply_commit(self, index: int, e: ShardMapCommitted) -> ClusterResult:
        """A commit installs the current proposal if it names it (index and nodes);
        anything else is stale and ignored."""
        p = self.proposal
        if p is None or p.index != e.proposal or p.nodes != tuple(e.nodes):
            return self._ignore(index, IgnoreReason.STALE_COMMIT)
        self.committed = p
        self._committed_map = self._proposal_map
        self.proposal = None
        self._proposal_map = None
        return CommitApplied(index, p)

    def _ignore(self, index: int, reason: IgnoreReason) -> Ignored:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1
        return Ignored(index, reason)

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return msgpack.packb(
            [SNAPSHOT_VERSION, self.created, _rec_out(self.committed), _rec_out(self.proposal),
             self.voters],
            use_bin_type=True,
        )

    def restore(self, data: bytes) -> None:
        try:
            raw = msgpack.unpackb(data, raw=False)
            if type(raw) is not list or (raw[:1], len(raw)) not in (([1], 4), ([2], 5)):
                raise ValueError("bad snapshot header")
            voters = raw[4] if len(raw) == 5 else None
            if voters is not None and (type(voters) is not int or voters < 1):
                raise ValueError("bad voter target")
            created = raw[1]
            if created is not None and type(created) not in (int, float):
                raise ValueError("bad created time")
            committed = _rec_in(raw[2])
            proposal = _rec_in(raw[3])
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"malformed cluster snapshot: {exc}") from None
        self.created = float(created) if created is not None else None
        self.committed = committed
        self.proposal = proposal
        self.voters = voters
        self._committed_map = None
        self._proposal_map = None


def _rec_out(r: MapRecord | None) -> Any:
    if r is None:
        return None
    return [r.index, r.leader, r.term, r.ack, list(r.nodes), r.moved, r.blob]


def _rec_in(raw: Any) -> MapRecord | None:
    if raw is None:
        return None
    index, leader, term, ack, nodes, moved, blob = raw
    if not (type(index) is int and type(leader) is str and type(term) is int
            and type(ack) is str and type(nodes) is list and type(moved) is int
            and type(blob) is bytes and all(type(n) is str for n in nodes)):
        raise ValueError("bad map record")
    try:
        ShardMap.decode(blob)
    except ShardMapDecodeError as exc:
        raise ValueError(f"bad map in snapshot: {exc}") from None
    return MapRecord(index, leader, term, ack, tuple(nodes), moved, blob, map_digest(blob))
