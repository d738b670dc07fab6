"""Tunables of the Raft core (:class:`RaftConfig`) and the cluster membership value
(:class:`Configuration`).

Time values are seconds of the node's local clock. Defaults follow HashiCorp Raft's
spirit (election timeout 1 s) with a faster heartbeat (10 per election timeout).
"""

from __future__ import annotations

import attrs
import msgpack


@attrs.frozen
class RaftConfig:
    """Raft tunables.

    * ``election_timeout`` (T, 1.0): a follower that hears nothing from a leader for a
      timeout drawn uniformly from [T, 2T) (with the injected RNG) starts an election.
      Also the CheckQuorum period and the leader-stickiness window.
    * ``heartbeat_interval`` (0.1): leader heartbeat period; must be < T.
    * ``nonvoter_heartbeat_rounds`` (5): a non-voter that is caught up (replicating,
      its log matching the leader's to the end) and has no commit index to learn gets
      only every Nth heartbeat round (0.5 s with the defaults). Its heartbeats feed no
      quorum (commit, reads, CheckQuorum); they keep its leader contact and its echo
      fresh, which the cluster layer's shard lease and unresponsive rule use: the
      period ``N * heartbeat_interval`` adds to the lease bound (docs/cluster.md,
      "Why no shard is served twice"), so it must stay below ``unresponsive_after -
      lease * (1 + max_clock_drift)``; a cluster node refuses to start otherwise
      (:func:`clusterfunk.cluster.coordinator.timing_errors`).
      News (a commit index), repair (a probing or lagging non-voter) and snapshots
      go out every round as before. 1: every round.
    * ``pre_vote`` (True): run a Pre-Vote round (dissertation 9.6) before a real election.
    * ``check_quorum`` (True): a leader that has not heard from a quorum of voters for T
      steps down; servers that heard from a live leader within T ignore vote requests.
    * ``max_entries_per_msg`` (512) / ``max_bytes_per_msg`` (1 MiB): batching limits of
      one AppendEntries.
    * ``max_inflight`` (64): AppendEntries messages in flight per follower when
      pipelining (replicate state).
    * ``max_proposal_bytes`` (1 MiB): larger proposals are refused (ProposalTooLarge).
    * ``snapshot_threshold`` (8192): take a snapshot when this many entries were applied
      since the last one (0 disables automatic snapshots).
    * ``trailing_logs`` (10240): entries kept in the log behind a snapshot, so slightly
      lagging followers catch up from the log rather than by InstallSnapshot.
    * ``snapshot_chunk_bytes`` (256 KiB): InstallSnapshot chunk size.
    * ``max_snapshot_bytes`` (4 GiB): a snapshot being received that grows beyond
      this is abandoned (bounds the memory a bad sender can make us hold).
    * ``max_clock_drift`` (0.1): assumed bound on the relative rate difference of any two
      servers' clocks; lease reads are served for ``T * (1 - max_clock_drift)`` after a
      quorum acknowledged a heartbeat round.
    * ``parallel_leader_write`` (False): the leader sends the AppendEntries of new
      proposals *before* syncing them to its own storage, syncs right after (on an
      immediate tick), and counts itself toward a commit only up to what it has synced
      (dissertation 10.2.1). Takes one storage sync off a commit's critical path at
      the price of one extra wake-up per step: worth it when ``sync`` costs real time
      (SQLite), not for ``MemoryStorage``. Term and vote are still durable before any
      message that depends on them leaves.
    * ``mutants`` (empty): planted bugs switched on (:mod:`clusterfunk.mutants`); only
      the simulator sets it.
    """

    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    nonvoter_heartbeat_rounds: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1 << 20
    max_inflight: int = 64
    max_proposal_bytes: int = 1 << 20
    snapshot_threshold: int = 8192
    trailing_logs: int = 10240
    snapshot_chunk_bytes: int = 256 * 1024
    max_snapshot_bytes: int = 4 << 30
    max_clock_drift: float = 0.1
    parallel_leader_write: bool = False
    mutants: frozenset[str] = frozenset()

    @property
    def member_heartbeat_period(self) -> float:
        """The longest gap between two heartbeats a caught-up member gets (a
        non-voter's: ``heartbeat_interval * nonvoter_heartbeat_rounds``)."""
        return self.heartbeat_interval * self.nonvoter_heartbeat_rounds

    def __attrs_post_init__(self) -> None:
        if not self.election_timeout > 0:
            raise ValueError("election_timeout must be > 0")
        if not 0 < self.heartbeat_interval < self.election_timeout:
            raise ValueError("heartbeat_interval must be in (0, election_timeout)")
        for name in ("nonvoter_heartbeat_rounds", "max_entries_per_msg", "max_bytes_per_msg",
                     "max_inflight", "max_proposal_bytes", "snapshot_chunk_bytes",
                     "max_snapshot_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.snapshot_threshold < 0 or self.trailing_logs < 0:
            raise ValueError("snapshot_threshold and trailing_logs must be >= 0")
        if not 0 <= self.max_clock_drift < 1:
            raise ValueError("max_clock_drift must be in [0, 1)")


@attrs.frozen
class Configuration:
    """The cluster membership: voters and non-voters, each ``id -> address``.

    Dicts are kept sorted by id (construct with :meth:`make`), so iteration order never
    depends on string hashing. Treat instances as immutable.
    """

    voters: dict[str, str] = attrs.Factory(dict)
    nonvoters: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def make(cls, voters: dict[str, str], nonvoters: dict[str, str] | None = None) -> Configuration:
        nonvoters = nonvoters or {}
        both = set(voters) & set(nonvoters)
        if both:
            raise ValueError(f"servers both voter and non-voter: {sorted(both)}")
        return cls(dict(sorted(voters.items())), dict(sorted(nonvoters.items())))

    def address(self, server_id: str) -> str | None:
        return self.voters.get(server_id) or self.nonvoters.get(server_id)

    def is_voter(self, server_id: str) -> bool:
        return server_id in self.voters

    def members(self) -> list[str]:
        """All server ids, sorted."""
        return sorted([*self.voters, *self.nonvoters])

    def encode(self) -> bytes:
        """Deterministic bytes: msgpack ``[[[id, addr], ...voters], [[id, addr], ...]]``."""
        return msgpack.packb(
            [[[k, v] for k, v in sorted(self.voters.items())],
             [[k, v] for k, v in sorted(self.nonvoters.items())]],
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        """Inverse of :meth:`encode`; raises ValueError on malformed bytes."""
        try:
            raw = msgpack.unpackb(data, raw=False)
            voters = {k: v for k, v in raw[0] if type(k) is str and type(v) is str}
            nonvoters = {k: v for k, v in raw[1] if type(k) is str and type(v) is str}
            if len(voters) != len(raw[0]) or len(nonvoters) != len(raw[1]):
                raise ValueError("non-string member")
        except Exception as exc:
            raise ValueError(f"malformed configuration: {exc}") from None
        return cls.make(voters, nonvoters)
