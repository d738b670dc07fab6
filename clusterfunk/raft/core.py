"""The Raft core: a pure, sans-I/O state machine (extended Raft paper, Ongaro &
Ousterhout 2014, and Ongaro's dissertation).

Inputs: ``start``, ``on_message``, ``on_tick`` and the API calls (``propose``,
``read_index``, membership changes, ``transfer_leadership``), each with ``now`` (the
local clock). Outputs: messages (``Output.sends``, always on the stream channel),
public events (``Output.events``, see :mod:`clusterfunk.raft.events`) and audit
trace records (``raft.role``, ``raft.apply``, ``raft.snapshot``, ``raft.config``).

Durability (etcd-raft style, :mod:`clusterfunk.raft.persist`): the core reads
``storage`` once, at construction (``recover``), and never writes it. Every change
to term, vote, log or snapshot appends a typed persist record to the step's
``Output.persist``; at the end of each input the step's records become one batch
with a token (``Output.persist_token``) when they must be synced. The step's
messages carry ``Output.wait_token``: the driver holds them until the persister
reports every batch up to it durable, and tells the core through
:meth:`RaftCore.on_persisted`. So votes, AppendEntries responses and a
candidate's RequestVotes never leave before what they promise is on disk. With
``parallel_leader_write`` a leader's AppendEntries for its own new entries leave at
once (wait token 0) and the leader counts itself toward a commit only up to the
entries reported durable; without it they wait like any other message, and the
leader still counts only durable entries. ``drain()`` only hands the Output over.

Structure (etcd-io/raft style): ``on_message`` applies the term rules common to all
servers, then dispatches to ``_step_leader`` / ``_step_candidate`` /
``_step_follower``. Each rule of Figure 2 lives in one method whose docstring quotes it.

Invariants:

* ``commit_index <= log.last_index`` (or the snapshot index) and it never decreases;
  committed entries are never truncated (a conflicting AppendEntries is dropped).
* ``last_applied <= commit_index``; entries are applied in order, exactly once per run.
* A leader counts replicas only for entries of its own term (Figure 8).
* At most one configuration entry is uncommitted; a configuration takes effect as
  soon as it is appended, and is rolled back if that entry is truncated.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from clusterfunk.raft import messages as m
from clusterfunk.raft.config import Configuration, RaftConfig
from clusterfunk.raft.errors import (
    ConfigChangeInProgress,
    NotLeader,
    ProposalTooLarge,
    StorageCorrupt,
    UnknownServer,
)
from clusterfunk.raft.events import (
    Applied,
    ConfigChanged,
    LeaderChanged,
    ReadFailed,
    ReadReady,
    RoleChanged,
    SnapshotRestored,
)
from clusterfunk.raft.log import RaftLog
from clusterfunk.raft.messages import (
    ENTRY_COMMAND,
    ENTRY_CONFIG,
    ENTRY_NOOP,
    MAX_TERM,
    NO_TERM,
    RAFT_MESSAGES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from clusterfunk.raft.persist import HardStateRecord, SnapshotRecord, new_record
from clusterfunk.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from clusterfunk.raft.quorum import has_quorum, quorum_index
from clusterfunk.raft.roles import CANDIDATE, FOLLOWER, LEADER, NONVOTER, PRECANDIDATE
from clusterfunk.raft.statemachine import ApplyError, StateMachine
from clusterfunk.raft.storage import HardState, SnapshotMeta, Storage
from clusterfunk.runtime.api import Output

_LEADER_MSGS = (AppendEntries, Heartbeat, InstallSnapshot, TimeoutNow)
_RAFT_MSGS = frozenset(RAFT_MESSAGES)


@functools.lru_cache(maxsize=8)
def entry_digest(kind: int, data: bytes) -> str:
    """The ``digest`` of ``raft.apply``: the first 32 hex characters of
    ``sha256(bytes([kind]) + data)``. Memoised for the last 8 entries (a pure
    function; in a simulation every server of the process applies the same entries
    within moments, and a shard map entry is some 10 kB to hash; the entries it
    keeps are recent ones, still in the log)."""
    h = _sha256(_KIND_BYTES[kind] if 0 <= kind < 256 else bytes((kind & 255,)))
    h.update(data)
    return h.hexdigest()[:32]


_sha256 = hashlib.sha256
_KIND_BYTES = [bytes((k,)) for k in range(256)]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _step(fn: Callable[Concatenate[RaftCore, _P], _R]) -> Callable[Concatenate[RaftCore, _P], _R]:
    """An input of the core: it ends its step (``_end_step``) however it returns.
    (The hot inputs, ``on_message``, ``propose`` and ``propose_many``, write the same
    ``try``/``finally`` inline: one Python call less per message.)"""

    @functools.wraps(fn)
    def run(self: RaftCore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(self, *args, **kwargs)
        finally:
            self._end_step()

    return run


class RaftCore:
    """One Raft server.

    ``RaftCore(server_id, storage, state_machine, rng, config=None, bootstrap=None)``:
    recovers from ``storage`` at once (raising :class:`StorageCorrupt` if it is
    damaged). ``bootstrap`` (``{id: address}`` of the initial voters, including this
    server) writes the initial configuration as entry 1 (term 0) if the storage is
    empty; every initial server must bootstrap with the same mapping. A server started
    without ``bootstrap`` on empty storage waits as a non-voter until a leader adds it.
    """

    def __init__(
        self,
        server_id: str,
        storage: Storage,
        state_machine: StateMachine,
        rng: random.Random,
        config: RaftConfig | None = None,
        bootstrap: dict[str, str] | None = None,
    ) -> None:
        self.id = server_id
        self.cfg = config if config is not None else RaftConfig()
        self.rng = rng
        self.storage = storage
        self.sm = state_machine
        self._out = Output()
        #: messages dropped, by reason (unknown server, stale term, ...)
        self.dropped: dict[str, int] = {}
        #: emit a ``raft.apply`` trace record per applied entry (a sha256 each); a
        #: runtime without a tracer may switch it off to save CPU on the hot path
        self.trace_applies = True
        #: the step's records must be durable before the step's messages leave
        self._dirty = False
        #: persist records of the current step, in order (the log appends here too)
        self._pending: list[Any] = []
        self._persist_seq = 0  # last token handed out (a batch that must be synced)
        self._durable_seq = 0  # last token reported durable (on_persisted)
        # The last log index the leader knows durable here; only up to it does it
        # count itself toward a commit (parallel_leader_write, dissertation 10.2.1,
        # and in general). Invariant while leading: _synced_last <= log.last_index.
        self._parallel = self.cfg.parallel_leader_write
        self._synced_last = 0
        # (token, last log index) of batches with the leader's own entries
        self._leader_marks: deque[tuple[int, int]] = deque()
        self._own_unsynced = False  # the leader appended entries in this step

        rec = storage.recover()
        hs = rec.hard_state
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.log = RaftLog(self._pending, rec.base_index, rec.base_term, rec.entries)
        self._snapshot: tuple[SnapshotMeta, bytes] | None = rec.snapshot
        self._restored_at_start = False
        # configurations: (index, config) of the snapshot's and of every config entry
        self._configs: list[tuple[int, Configuration]] = []
        snap_index = 0
        if rec.snapshot is not None:
            meta, data = rec.snapshot
            snap_index = meta.index
            if self.log.term_at(meta.index) != meta.term:
                # The log does not reach the snapshot or is from another history (a
                # crash between saving an installed snapshot and resetting the log):
                # its entries past the snapshot are uncommitted, committed ones are in
                # the snapshot. Entries matching the snapshot are kept (trailing logs).
                self.log.reset(meta.index, meta.term)
                self._dirty = True
            try:
                state_machine.restore(data)
            except ValueError as exc:
                raise StorageCorrupt(
                    f"snapshot at {meta.index} cannot be restored: {exc}") from None
            self._configs.append((meta.config_index, meta.config))
            self._restored_at_start = True
        else:
            self._configs.append((0, Configuration()))
        for i, e in enumerate(self.log.entries):
            if e.kind == ENTRY_CONFIG:
                idx = self.log.base_index + 1 + i
                try:
                    self._configs.append((idx, Configuration.decode(e.data)))
                except ValueError as exc:
                    raise StorageCorrupt(f"configuration entry {idx}: {exc}") from None
        self.commit_index = max(hs.commit, snap_index)
        if self.commit_index > self.log.last_index:
            raise StorageCorrupt(
                f"commit index {self.commit_index} beyond the log ({self.log.last_index})"
            )
        self.last_applied = snap_index

        if bootstrap is not None and self.term == 0 and self.log.last_index == 0 \
                and rec.snapshot is None:
            if server_id not in bootstrap:
                raise ValueError(f"bootstrap configuration must include {server_id!r}")
            boot = Configuration.make(dict(bootstrap))
            self.log.append([Entry(0, ENTRY_CONFIG, boot.encode())])
            self._configs.append((1, boot))
            self._dirty = True

        self._config_index, self.configuration = self._configs[-1]
        self._saved_hs = hs
        self.role = FOLLOWER if self.configuration.is_voter(server_id) else NONVOTER
        self.leader_id: str | None = None
        self._emitted_role: tuple[str, int] | None = None
        # timers (local clock)
        self._election_deadline = math.inf
        self._hb_deadline = math.inf
        self._cq_deadline = math.inf
        self._leader_contact = -math.inf
        self._heard_commit: tuple[int, int] | None = None  # (term, highest leaderCommit)
        self._heard_commit_at = -math.inf  # local time of the last AppendEntries
        # elections
        self._votes: dict[str, bool] = {}
        # the RequestVote (or pre-vote) of the current election, resent every
        # heartbeat interval to the voters that have not answered (_retry_vote_requests)
        self._vote_req: RequestVote | None = None
        self._vote_retry_at = math.inf
        # leader state
        self.progress: dict[str, Progress] = {}
        self._append_pending = False
        self._commit_due = False  # _end_step tries to commit (_maybe_commit)
        self._committed_own_term = False
        self._transfer_target: str | None = None
        self._transfer_deadline = math.inf
        # reads: heartbeat rounds numbered by ctx (seq)
        self._read_seq = 0
        self._round_pending = False
        self._reads: deque[tuple[int, int, int]] = deque()  # (seq, ctx, index)
        self._reads_config: Configuration | None = None  # as _advance_reads last ran
        self._reads_waiting: list[tuple[int, bool]] = []  # before own-term commit
        self._hb_rounds: deque[tuple[int, float]] = deque()  # (seq, local send time)
        self._lease_start = -math.inf
        self._lease_forfeited = False
        # snapshot reception
        self._snap_key: tuple[int, int, int] | None = None
        self._snap_buf = bytearray()
        self.now = 0.0

    # ------------------------------------------------------------------ properties

    @property
    def leader_address(self) -> str | None:
        if self.leader_id is None:
            return None
        return self.configuration.address(self.leader_id)

    @property
    def address(self) -> str | None:
        return self.configuration.address(self.id)

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def snapshot_index(self) -> int:
        return self._snapshot[0].index if self._snapshot is not None else 0

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def leader_contact(self) -> float:
        """Local time this server last heard from a leader of its term (an accepted
        AppendEntries or InstallSnapshot; on the leader, the last CheckQuorum that
        found a quorum active; at boot, the start time). Read by the coordinator's
        shard lease (docs/cluster.md)."""
        return self._leader_contact

    @property
    def leader_commit(self) -> int | None:
        """The highest commit index the leader of the current term announced to this
        server since it booted (None before its first AppendEntries); on the leader,
        its commit index once it committed an entry of its term (None before). A
        server whose ``commit_index`` reached it has applied everything committed
        before that message was sent."""
        if self.role == LEADER:
            return self.commit_index if self._committed_own_term else None
        heard = self._heard_commit
        return heard[1] if heard is not None and heard[0] == self.term else None

    @property
    def leader_commit_at(self) -> float:
        """Local time of the last AppendEntries from a leader (heartbeats do not carry
        the leader's real commit index); on the leader, :attr:`leader_contact`."""
        return self._leader_contact if self.role == LEADER else self._heard_commit_at

    # ------------------------------------------------------------------ Core API

    @_step
    def start(self, now: float) -> None:
        self.now = now
        # Boot stickiness: ignore vote requests for T after boot, as if a leader had
        # just been heard (keeps lease reads safe across restarts of followers).
        self._leader_contact = now
        self._emit_role()
        c = self.configuration
        self._out.emit("raft.config", index=self._config_index, voters=sorted(c.voters),
                       nonvoters=sorted(c.nonvoters))
        if self._restored_at_start and self._snapshot is not None:
            meta = self._snapshot[0]
            self._out.emit("raft.snapshot", index=meta.index, term=meta.term)
            self._out.events.append(SnapshotRestored(meta.index, meta.term))
        self._apply_committed()
        if self.role != NONVOTER:
            self._reset_election_timer(now)

    def next_deadline(self) -> float:
        if self.role == LEADER:
            return min(self._hb_deadline, self._cq_deadline, self._transfer_deadline)
        if self.role == NONVOTER:
            return math.inf
        if self.role == FOLLOWER:
            return self._election_deadline
        return min(self._election_deadline, self._vote_retry_at)  # (pre-)candidate

    def on_tick(self, now: float) -> None:
        self.now = now
        if self.role == LEADER:
            if now >= self._hb_deadline:
                self._hb_deadline = now + self.cfg.heartbeat_interval
                self._broadcast_heartbeat(now)
            if now >= self._cq_deadline:
                self._cq_deadline = now + self.cfg.election_timeout
                if self.cfg.check_quorum:
                    self._check_quorum(now)
            if self.role == LEADER and now >= self._transfer_deadline:
                self._transfer_target = None  # transfer timed out: keep leading
                self._transfer_deadline = math.inf
        elif self.role != NONVOTER and now >= self._election_deadline:
            self._on_election_timeout(now)
        elif self.role in (CANDIDATE, PRECANDIDATE) and now >= self._vote_retry_at:
            self._retry_vote_requests(now)
        self._end_step()

    def drain(self) -> Output | None:
        """Hand over the Output collected since the last call (``None`` if empty).
        A getter: every input already finished its step (:meth:`_end_step`)."""
        out = self._out
        if not (out.sends or out.persist or out.events or out.trace):  # Output.__bool__
            return None
        self._out = Output()
        return out

    def on_persisted(self, now: float, token: int) -> None:
        """Durability input (etcd-raft style): every persist batch up to ``token`` is
        durable. The leader now counts its own entries of those batches toward a
        commit (Rules for Servers, Leaders: a majority of matchIndex, 5.3, counting
        itself only for what is on its disk)."""
        if token <= self._durable_seq:
            return
        self._durable_seq = token
        marks = self._leader_marks
        if not marks or marks[0][0] > token:
            return  # nothing of a leader's own entries in it: nothing to do
        last = 0
        while marks and marks[0][0] <= token:
            last = marks.popleft()[1]
        if last > self._synced_last and self.role == LEADER:
            self.now = now
            self._synced_last = last
            commit = self.commit_index
            if last <= commit:
                return  # a durable mark at or below the commit index commits nothing
            voters = self.configuration.voters
            if self.id in voters and "raft-commit-minority" not in self.cfg.mutants:
                # A majority past the commit index needs, besides this server,
                # len(voters) // 2 other voters past it already (_maybe_commit).
                progress = self.progress
                ahead = 0
                for sid in voters:
                    pr = progress.get(sid)
                    if pr is not None and pr.match > commit:
                        ahead += 1
                if ahead < len(voters) // 2:
                    return
            self._maybe_commit()
            if self.commit_index != commit:
                self._end_step()

    def _end_step(self) -> None:
        """End of one input: the leader's batched broadcasts, then the step's persist
        records become one batch of the Output (see the module docstring)."""
        if self.role == LEADER:
            if self._append_pending:
                self._append_pending = False
                self._broadcast_append()
                if self._commit_due:
                    # The voters changed, or this server just became leader; a step
                    # that only appended entries moved no match index (_maybe_commit).
                    self._commit_due = False
                    self._maybe_commit()
            if self._round_pending:
                self._broadcast_heartbeat(self.now)
            leader = self.role == LEADER  # (it may have committed its own removal)
        else:
            leader = False
        hs = self._saved_hs
        if hs.term != self.term or hs.vote != self.vote:
            self._save_hard_state()
        elif hs.commit != self.commit_index:
            # The commit index alone needs no sync (it is re-learned from the leader
            # after a crash): it rides along with the next durable write.
            hs = self._saved_hs = new_record(HardState, (self.term, self.vote,
                                                        self.commit_index))
            self._pending.append(new_record(HardStateRecord, (hs,)))
        pending = self._pending
        out = self._out
        if pending:
            out.persist.extend(pending)
            pending.clear()
            if self._dirty or self._own_unsynced:
                token = out.persist_token
                if not token:  # several inputs before one drain share a batch
                    token = self._persist_seq = self._persist_seq + 1
                    out.persist_token = token
                if leader:
                    marks = self._leader_marks
                    if marks and marks[-1][0] == token:
                        marks[-1] = (token, self.log.last_index)
                    else:
                        marks.append((token, self.log.last_index))
                if self._dirty or not leader:
                    # Term, vote and entries durable before the step's messages leave.
                    # A server that stopped leading in this step waits for its own
                    # parallel-written entries too: as a follower it may acknowledge
                    # them.
                    out.wait_token = token
                self._dirty = False
                self._own_unsynced = False
        if not leader and self._durable_seq < self._persist_seq and out.sends:
            # A follower's answers may rest on entries it wrote as leader in parallel
            # and that are not durable yet: they wait for them.
            out.wait_token = self._persist_seq

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        """Rules for Servers, All Servers: if RPC request or response contains term
        T > currentTerm: set currentTerm = T, convert to follower (5.1). Requests
        with a stale term are answered with the current term; stale responses are
        dropped. Then the message goes to the step function of the current role."""
        try:
            self.now = now
            kind = type(msg)
            if kind not in _RAFT_MSGS:
                self._drop("unexpected message type")
                return
            sender = msg.sender
            if sender == self.id:
                self._drop("message from self")
                return
            term = msg.term
            if term > MAX_TERM:
                self._drop("term out of range")
                return
            # Membership first (issue 11): act only on servers of the latest configuration,
            # or of the committed one (a leader that removes itself replicates until the
            # removal commits); votes only from its voters. A server that knows no
            # configuration yet (waiting to be added) accepts a leader's messages. Checked
            # before the term rules, so a stranger's term is never adopted and its
            # transfer flag never skips the lease.
            c = self.configuration
            if kind is RequestVote:
                known = sender in c.voters
            else:
                known = sender in c.voters or sender in c.nonvoters \
                    or (kind in _LEADER_MSGS and not c.voters and not c.nonvoters) \
                    or self._config_at(self.commit_index)[1].address(sender) is not None
            if not known:
                self._drop("unknown server")
                return
            if term > self.term:
                if kind is RequestVote:
                    if not msg.transfer and self._in_lease(now):
                        self._drop("vote request during leader lease")
                        return
                    if not msg.pre_vote:
                        self._become_follower(now, term, None)
                elif kind is RequestVoteResponse and msg.pre_vote and msg.granted:
                    pass  # a granted pre-vote carries the proposed term, not a real one
                else:
                    self._become_follower(now, term, sender if kind in _LEADER_MSGS else None)
            elif term < self.term and not (
                    kind in (AppendEntries, Heartbeat) and "raft-stale-append" in self.cfg.mutants):
                # (the mutant above breaks AppendEntries receiver rule 1, 5.1: it lets a
                # deposed leader's AppendEntries / heartbeat through to the follower rules)
                self._drop("stale term")
                if kind in (AppendEntries, Heartbeat, InstallSnapshot):
                    # let a deposed leader learn the new term
                    self._out.send(src, AppendEntriesResponse(self.term, self.id, False, 0), True)
                elif kind is RequestVote:
                    self._out.send(src, RequestVoteResponse(self.term, self.id, False,
                                                            msg.pre_vote), True)
                return
            role = self.role
            if kind is RequestVote:
                self._handle_request_vote(now, src, msg)
            elif role == LEADER:
                self._step_leader(now, src, msg)
            elif role in (CANDIDATE, PRECANDIDATE):
                self._step_candidate(now, src, msg)
            elif kind is AppendEntries:  # _step_follower's first cases, without the hop
                self._handle_append_entries(now, src, msg)
            elif kind is Heartbeat:
                self._handle_heartbeat(now, src, msg)
            else:
                self._step_follower(now, src, msg)
        finally:
            self._end_step()

    # ------------------------------------------------------------------ step functions

    def _step_leader(self, now: float, src: str, msg: Any) -> None:
        kind = type(msg)
        pr = self.progress.get(msg.sender)
        if kind is AppendEntriesResponse:
            if pr is None:
                self._drop("unknown server")
                return
            self._handle_append_response(now, msg.sender, pr, msg)
        elif kind is HeartbeatResponse:
            if pr is None:
                self._drop("unknown server")
                return
            self._handle_heartbeat_response(now, msg.sender, pr, msg)
        elif kind is InstallSnapshotResponse:
            if pr is None:
                self._drop("unknown server")
                return
            self._handle_snapshot_response(now, msg.sender, pr, msg)
        elif kind in _LEADER_MSGS:
            self._drop("another leader in the same term")  # impossible if votes are durable
        else:
            self._drop("stale response")

    def _step_candidate(self, now: float, src: str, msg: Any) -> None:
        kind = type(msg)
        if kind is RequestVoteResponse:
            self._handle_vote_response(now, msg)
        elif kind in (AppendEntries, Heartbeat, InstallSnapshot):
            self._candidate_sees_leader(now, msg.sender)
            self._step_follower(now, src, msg)
        else:
            self._drop("stale response")

    def _step_follower(self, now: float, src: str, msg: Any) -> None:
        kind = type(msg)
        if kind is AppendEntries:
            self._handle_append_entries(now, src, msg)
        elif kind is Heartbeat:
            self._handle_heartbeat(now, src, msg)
        elif kind is InstallSnapshot:
            self._handle_install_snapshot(now, src, msg)
        elif kind is TimeoutNow:
            self._handle_timeout_now(now, msg)
        else:
            self._drop("stale response")

    # ------------------------------------------------------------------ elections

    def _reset_election_timer(self, now: float) -> None:
        """Election timeout drawn uniformly from [T, 2T) with the injected RNG."""
        t = self.cfg.election_timeout
        self._election_deadline = now + t + self.rng.random() * t

    def _in_lease(self, now: float) -> bool:
        """CheckQuorum's leader stickiness: a server that heard from a live leader
        (or is one) within the election timeout ignores disruptive vote requests."""
        return self.cfg.check_quorum and now - self._leader_contact < self.cfg.election_timeout

    def _on_election_timeout(self, now: float) -> None:
        """Rules for Servers, Followers: if election timeout elapses without receiving
        AppendEntries RPC from current leader or granting vote to candidate: convert
        to candidate (with Pre-Vote first, dissertation 9.6). Candidates: if election
        timeout elapses: start new election."""
        if self.cfg.pre_vote:
            self._become_precandidate(now)
        else:
            self._become_candidate(now, transfer=False)

    def _become_precandidate(self, now: float) -> None:
        """Pre-Vote (dissertation 9.6): ask the voters whether they would vote for us in
        term + 1, without changing anybody's term or vote."""
        self.role = PRECANDIDATE
        self._set_leader(None)
        self._votes = {self.id: True}
        self._reset_election_timer(now)
        self._emit_role()
        req = RequestVote(self.term + 1, self.id, self.log.last_index, self.log.last_term,
                          True, False)
        self._vote_req = req
        self._vote_retry_at = now + self.cfg.heartbeat_interval
        self._send_to_voters(req)
        self._count_votes(now)

    def _become_candidate(self, now: float, transfer: bool) -> None:
        """Rules for Servers, Candidates: on conversion to candidate, start election:
        increment currentTerm, vote for self, reset election timer, send RequestVote
        RPCs to all other servers (5.2)."""
        self.term += 1
        self.vote = self.id
        self._save_hard_state()
        self.role = CANDIDATE
        self._set_leader(None)
        self._votes = {self.id: True}
        self._reset_election_timer(now)
        self._emit_role()
        req = RequestVote(self.term, self.id, self.log.last_index, self.log.last_term,
                          False, transfer)
        self._vote_req = req
        self._vote_retry_at = now + self.cfg.heartbeat_interval
        self._send_to_voters(req)
        self._count_votes(now)

    def _send_to_voters(self, msg: Any) -> None:
        for sid, addr in self.configuration.voters.items():
            if sid != self.id:
                self._out.send(addr, msg, True)

    def _retry_vote_requests(self, now: float) -> None:
        """Rules for Servers, retry (5.1): servers retry RPCs if they do not receive
        a response in a timely manner. While its election runs, a candidate resends
        its RequestVote, unchanged (its term and log do not change while it is a
        candidate), every heartbeat interval to the voters that have not answered;
        a voter that answered, granted or not, is not asked again. A lost request or
        response (a partition, a crashed voter's lost frames) no longer costs the
        election. A pre-candidate resends its pre-vote the same way: a pre-vote is an
        RPC like any other and changes no state, so a retry is harmless, and without
        it one lost pre-vote costs a whole election timeout before the real election
        can even begin."""
        self._vote_retry_at = now + self.cfg.heartbeat_interval
        req = self._vote_req
        if req is None:
            return
        votes = self._votes
        for sid, addr in self.configuration.voters.items():
            if sid != self.id and sid not in votes:
                self._out.send(addr, req, True)

    def _handle_request_vote(self, now: float, src: str, req: RequestVote) -> None:
        """RequestVote RPC, receiver implementation: 1. Reply false if term <
        currentTerm (5.1). 2. If votedFor is null or candidateId, and candidate's log
        is at least as up-to-date as receiver's log, grant vote (5.2, 5.4). A pre-vote
        is granted on the same log test if the proposed term is higher than ours and we
        know no live leader; it changes no state."""
        if not self.configuration.is_voter(req.sender):
            self._drop("unknown server")
            return
        if req.pre_vote:
            can_vote = req.term > self.term and (self.leader_id is None or req.transfer
                                                 or not self._in_lease(now))
        else:
            can_vote = self.vote == req.sender or (self.vote is None and self.leader_id is None)
        up_to_date = self.log.is_up_to_date(req.last_index, req.last_term)
        if "raft-vote-without-log-check" in self.cfg.mutants:
            up_to_date = True  # MUTANT: breaks the election restriction (5.4.1)
        if can_vote and up_to_date:
            if not req.pre_vote:
                self.vote = req.sender  # durable (drain) before the response leaves
                if "raft-vote-not-persisted" in self.cfg.mutants:
                    # MUTANT: breaks Figure 2 persistent state (5.2): drain believes the
                    # vote is saved, so the response leaves before votedFor is durable
                    self._saved_hs = HardState(self.term, self.vote, self._saved_hs.commit)
                self._reset_election_timer(now)
            self._out.send(src, RequestVoteResponse(req.term, self.id, True, req.pre_vote), True)
        else:
            self._out.send(src, RequestVoteResponse(self.term, self.id, False, req.pre_vote), True)

    def _handle_vote_response(self, now: float, resp: RequestVoteResponse) -> None:
        """Rules for Servers, Candidates: if votes received from majority of servers:
        become leader (5.2). (A pre-candidate that wins the pre-vote becomes a
        candidate; a majority of rejections sends either back to follower.)"""
        if not self.configuration.is_voter(resp.sender):
            self._drop("unknown server")
            return
        if self.role == PRECANDIDATE:
            if not resp.pre_vote or (resp.granted and resp.term != self.term + 1):
                self._drop("stale response")
                return
        elif resp.pre_vote or resp.term != self.term:
            self._drop("stale response")
            return
        self._votes[resp.sender] = resp.granted
        self._count_votes(now)

    def _count_votes(self, now: float) -> None:
        n = len(self.configuration.voters)
        granted = sum(1 for v in self._votes.values() if v)
        if has_quorum(granted, n):
            if self.role == PRECANDIDATE:
                self._become_candidate(now, transfer=False)
            else:
                self._become_leader(now)
        elif has_quorum(len(self._votes) - granted, n):
            self._become_follower(now, self.term, None)

    def _candidate_sees_leader(self, now: float, leader: str) -> None:
        """Rules for Servers, Candidates: if AppendEntries RPC received from new
        leader: convert to follower (5.2)."""
        self._become_follower(now, self.term, leader)

    def _handle_timeout_now(self, now: float, msg: TimeoutNow) -> None:
        """Leadership transfer (dissertation 3.10): the leader tells us to start an
        election at once, skipping Pre-Vote and leader stickiness."""
        if msg.sender != self.leader_id or not self.configuration.is_voter(self.id):
            self._drop("unexpected TimeoutNow")
            return
        self._become_candidate(now, transfer=True)

    def _become_follower(self, now: float, term: int, leader: str | None) -> None:
        was_leader = self.role == LEADER
        if term > self.term:
            self.term = term
            self.vote = None
            self._save_hard_state()
        self.role = FOLLOWER if self.configuration.is_voter(self.id) else NONVOTER
        self._votes = {}
        if was_leader:
            self._stop_leading("leadership lost")
        self._set_leader(leader)
        if leader is not None:
            self._leader_contact = now
        self._reset_election_timer(now)
        self._emit_role()

    def _become_leader(self, now: float) -> None:
        """Rules for Servers, Leaders: upon election: send initial empty AppendEntries
        RPCs (heartbeat) to each server; repeat during idle periods (5.2). The leader
        also appends a no-op entry of its term: committing it commits every earlier
        entry (Figure 8) and enables ReadIndex."""
        self.role = LEADER
        self._votes = {}
        self._set_leader(self.id)
        self._emit_role()
        self._leader_contact = now
        last = self.log.last_index
        self.progress = {}
        for sid in self.configuration.members():
            if sid != self.id:
                self.progress[sid] = Progress(self.configuration.address(sid) or "", last + 1,
                                              self.cfg.max_inflight)
        self._committed_own_term = False
        self._transfer_target = None
        self._transfer_deadline = math.inf
        self._lease_start = -math.inf
        self._lease_forfeited = False
        self._hb_rounds.clear()
        self._hb_deadline = now + self.cfg.heartbeat_interval
        self._cq_deadline = now + self.cfg.election_timeout
        # Everything written before is durable once nothing is outstanding (a
        # candidate's RequestVotes waited for its batch); otherwise count nothing
        # of its own until the batch with the no-op below is reported durable.
        outstanding = self._durable_seq < self._persist_seq or self._pending
        self._synced_last = 0 if outstanding else last
        self._leader_marks.clear()
        self._commit_due = True
        self.log.append([Entry(self.term, ENTRY_NOOP, b"")])
        self._dirty = True
        self._append_pending = True  # the no-op's AppendEntries is the first heartbeat

    def _stop_leading(self, reason: str) -> None:
        self._leader_marks.clear()
        self._commit_due = False
        self.progress = {}
        self._append_pending = False
        self._round_pending = False
        self._transfer_target = None
        self._transfer_deadline = math.inf
        self._committed_own_term = False
        self._lease_start = -math.inf
        for _seq, ctx, _idx in self._reads:
            self._out.events.append(ReadFailed(ctx, reason))
        for ctx, _lease in self._reads_waiting:
            self._out.events.append(ReadFailed(ctx, reason))
        self._reads.clear()
        self._reads_waiting = []
        self._hb_rounds.clear()

    def _check_quorum(self, now: float) -> None:
        """CheckQuorum (dissertation 6.2): a leader that has not heard from a quorum of
        voters within an election timeout steps down."""
        voters = self.configuration.voters
        active = 0
        for sid in voters:
            if sid == self.id:
                active += 1
            else:
                pr = self.progress.get(sid)
                if pr is not None and pr.recent_active:
                    active += 1
        for pr in self.progress.values():
            pr.recent_active = False
        if has_quorum(active, len(voters)):
            self._leader_contact = now
        else:
            self._become_follower(now, self.term, None)

    # ------------------------------------------------------------------ replication

    def _follow(self, now: float, leader: str) -> None:
        if self.leader_id != leader:
            self._set_leader(leader)
        self._leader_contact = now
        self._reset_election_timer(now)

    def _handle_append_entries(self, now: float, src: str, req: AppendEntries) -> None:
        """AppendEntries RPC, receiver implementation: 1. Reply false if term <
        currentTerm (5.1). 2. Reply false if log doesn't contain an entry at prevLogIndex
        whose term matches prevLogTerm (5.3) (with conflict hints). 3. If an existing
        entry conflicts with a new one (same index but different terms), delete the
        existing entry and all that follow it (5.3). 4. Append any new entries not
        already in the log. 5. If leaderCommit > commitIndex, set commitIndex =
        min(leaderCommit, index of last new entry)."""
        self._follow(now, req.sender)
        heard = self._heard_commit
        if heard is None or heard[0] != self.term or req.commit > heard[1]:
            self._heard_commit = (self.term, req.commit)
        self._heard_commit_at = now
        log = self.log
        try:
            entries = req.entries
        except ValueError:
            self._drop("malformed entry")
            return
        prev = req.prev_index
        if prev < self.commit_index:
            # Entries up to the commit index are committed, hence match: skip them.
            skip = self.commit_index - prev
            if skip >= len(entries):
                self._out.send(src, AppendEntriesResponse(self.term, self.id, True,
                                                          self.commit_index), True)
                return
            entries = entries[skip:]
            prev = self.commit_index
            prev_term = log.term_at(prev)
        else:
            prev_term = req.prev_term
        mine = log.term_at(prev)
        if mine is None:
            self._out.send(src, AppendEntriesResponse(
                self.term, self.id, False, 0, req.prev_index, log.last_index + 1, NO_TERM), True)
            return
        if mine != prev_term:
            hint = log.first_index_of_term_at(prev)
            self._out.send(src, AppendEntriesResponse(
                self.term, self.id, False, 0, req.prev_index, hint, mine), True)
            return
        k = log.find_conflict(prev, entries)
        if "raft-append-keeps-conflicts" in self.cfg.mutants:
            # MUTANT: breaks AppendEntries receiver rule 3 (5.3): keep a conflicting suffix
            k = max(k, min(len(entries), log.last_index - prev))
        if k < len(entries):
            first = prev + 1 + k
            if first <= self.commit_index:
                self._drop("conflicts with a committed entry")  # never truncate those
                return
            new = entries[k:]
            truncating = first <= log.last_index
            configs: list[tuple[int, Configuration]] = []
            kinds = m.ENTRY_KINDS
            for j, e in enumerate(new):
                kind = e.kind
                if kind == ENTRY_CONFIG:
                    try:
                        configs.append((first + j, Configuration.decode(e.data)))
                    except ValueError:
                        self._drop("malformed configuration entry")
                        return
                elif kind not in kinds:
                    self._drop("malformed entry")
                    return
            log.truncate_and_append(first, new)
            self._dirty = True
            if truncating and self._configs[-1][0] >= first:
                self._rollback_configs(first)
            for index, c in configs:
                self._configs.append((index, c))
                self._set_configuration(now, index, c)
        last_new = prev + len(entries)
        if req.commit > self.commit_index:
            self.commit_index = req.commit if req.commit < last_new else last_new  # min()
            self._apply_committed()
        self._out.send(src, AppendEntriesResponse(self.term, self.id, True, last_new), True)

    def _handle_heartbeat(self, now: float, src: str, hb: Heartbeat) -> None:
        """Heartbeat (an empty AppendEntries, 5.2): keeps the follower's election timer
        from firing; the commit index it carries is capped by the leader at what it
        knows we hold, so it is safe to adopt."""
        self._follow(now, hb.sender)
        c = min(hb.commit, self.log.last_index)
        if c > self.commit_index:
            self.commit_index = c
            self._apply_committed()
        self._out.send(src, HeartbeatResponse(self.term, self.id, hb.ctx), True)

    def _send_append(self, sid: str, pr: Progress,
                     cache: dict[tuple[int, int], tuple[AppendEntries, int]] | None = None,
                     ) -> None:
        """Rules for Servers, Leaders: if last log index >= nextIndex for a follower:
        send AppendEntries RPC with log entries starting at nextIndex (5.3). Batches
        up to the message limits; in the replicate state pipelines up to
        ``max_inflight`` messages."""
        log = self.log
        cfg = self.cfg
        if cache is None:
            cache = {}
        while not pr.paused:
            nxt = pr.next
            if nxt - 1 < log.base_index:
                self._send_snapshot(sid, pr)
                return
            last = log.last_index
            if nxt > last and pr.state == REPLICATE:
                return
            # Followers in step get the same message: built once per broadcast.
            key = (nxt, last)
            hit = cache.get(key)
            if hit is None:
                entries = log.slice(nxt, last + 1, cfg.max_entries_per_msg,
                                    cfg.max_bytes_per_msg)
                prev = nxt - 1
                hit = cache[key] = (AppendEntries.make(
                    self.term, self.id, prev, log.term_at(prev) or 0, entries,
                    self.commit_index), prev + len(entries))
            self._out.send(pr.address, hit[0], True)
            pr.sent(hit[1])
            if pr.state != REPLICATE or hit[1] >= last:
                return

    def _broadcast_append(self) -> None:
        cache: dict[tuple[int, int], tuple[AppendEntries, int]] = {}
        for sid, pr in self.progress.items():
            self._send_append(sid, pr, cache)

    def _handle_append_response(self, now: float, sid: str, pr: Progress,
                                resp: AppendEntriesResponse) -> None:
        """Rules for Servers, Leaders: if successful: update nextIndex and matchIndex
        for follower (5.3). If AppendEntries fails because of log inconsistency:
        decrement nextIndex and retry (5.3) -- here by a whole term at once, using the
        follower's conflict hints."""
        pr.recent_active = True
        if resp.success:
            if resp.match_index > self.log.last_index:
                self._drop("match index beyond the log")  # forged or corrupt
                return
            news = pr.update(resp.match_index)
            if pr.state == PROBE:
                pr.become_replicate()  # the log matches up to `match`: stream from there
            if news:
                if pr.match > self.commit_index:  # see _maybe_commit: when to try
                    self._maybe_commit()
                    if self.role != LEADER:
                        return  # it committed its own removal and stepped down
                if self._transfer_target == sid and pr.match == self.log.last_index:
                    self._send_timeout_now(pr)
            if pr.state != SNAPSHOT and pr.next <= self.log.last_index:
                # (replicating: with nothing past `next` _send_append sends nothing)
                self._send_append(sid, pr)
            return
        if pr.state == SNAPSHOT:
            return
        if pr.state == REPLICATE and resp.reject_index <= pr.match:
            return  # stale rejection of an older pipelined message
        if pr.state == PROBE and resp.reject_index != pr.next - 1:
            return  # answers an older probe
        nxt = resp.conflict_index
        if resp.conflict_term != NO_TERM:
            li = self.log.last_index_of_term(resp.conflict_term)
            if li is not None:
                nxt = li + 1
        pr.become_probe()
        pr.next = max(pr.match + 1, min(nxt, resp.reject_index))
        self._send_append(sid, pr)

    def _maybe_commit(self) -> None:
        """Rules for Servers, Leaders: if there exists an N such that N > commitIndex,
        a majority of matchIndex[i] >= N, and log[N].term == currentTerm: set
        commitIndex = N (5.3, 5.4). Replicas of earlier terms' entries are never
        counted (Figure 8).

        When it is tried: whenever a voter's match index (or this leader's durable
        mark, ``_synced_last``) moves past the commit index, and at the end of a step
        in which the voters changed or this server became leader (``_commit_due``).
        Nothing else can make N exist: a value that stays at or below the commit index
        changes neither how many values exceed it nor the majority value above it,
        the leader's log only grows past every match index, and commitIndex only
        grows."""
        progress = self.progress
        me = self.id
        mine = self._synced_last  # only what is durable here counts (on_persisted)
        matches = []
        for sid in self.configuration.voters:
            if sid == me:
                matches.append(mine)
            else:
                pr = progress.get(sid)
                if pr is None:
                    return  # a voter without progress yet: no majority is known
                matches.append(pr.match)
        n = quorum_index(matches)
        if "raft-commit-minority" in self.cfg.mutants:
            # MUTANT: breaks "a majority of matchIndex[i] >= N" (5.3): half (rounded down)
            n = sorted(matches, reverse=True)[max(len(matches) // 2 - 1, 0)]
        own_term = self.log.term_at(n) == self.term
        if "raft-commit-old-term" in self.cfg.mutants:
            own_term = True  # MUTANT: breaks 5.4.2 / Figure 8 (counts replicas of old terms)
        if n > self.commit_index and own_term:
            self.commit_index = n
            self._apply_committed()
            if not self._committed_own_term and self.role == LEADER:
                self._committed_own_term = True
                waiting, self._reads_waiting = self._reads_waiting, []
                for ctx, lease in waiting:
                    self._start_read(ctx, lease)

    def _apply_committed(self) -> None:
        """Rules for Servers, All Servers: if commitIndex > lastApplied: increment
        lastApplied, apply log[lastApplied] to state machine (5.3)."""
        log = self.log
        out = self._out
        term_now = self.term
        trace = out.trace
        events = out.events
        entries = log.entries
        base = log.base_index
        sm_apply = self.sm.apply
        trace_on = self.trace_applies
        limit = self.commit_index
        if "raft-apply-before-commit" in self.cfg.mutants:
            limit = log.last_index  # MUTANT: breaks 5.3 / Figure 2 (apply only committed)
        command = ENTRY_COMMAND
        idx = self.last_applied
        while idx < limit:
            idx += 1
            e = entries[idx - base - 1]
            self.last_applied = idx
            result: Any = None
            kind = e.kind
            if kind == command:
                try:
                    result = sm_apply(idx, e.data)
                except Exception as exc:  # an application bug must not kill the node
                    result = ApplyError(f"{type(exc).__name__}: {exc}")
            if trace_on:
                trace.append(("raft.apply", {"index": idx, "term": e.term,
                                             "digest": entry_digest(kind, e.data)}))
            events.append(Applied(idx, e.term, result, kind))
        if self.role == LEADER and term_now == self.term \
                and self.id not in self.configuration.voters \
                and self.commit_index >= self._config_index:
            # The leader removed itself: it steps down once the change is committed,
            # and hands over at once to the most up-to-date voter (TimeoutNow).
            voters = [v for v in self.configuration.voters if v in self.progress]
            if voters:
                best = max(voters, key=lambda v: (self.progress[v].match, v))
                pr = self.progress[best]
                if pr.match == log.last_index:
                    self._send_timeout_now(pr)
            self._become_follower(self.now, self.term, None)
        if self.cfg.snapshot_threshold and \
                self.last_applied - self.snapshot_index >= self.cfg.snapshot_threshold:
            self.take_snapshot()

    # ------------------------------------------------------------------ heartbeats, reads

    def _broadcast_heartbeat(self, now: float) -> None:
        """A heartbeat round (5.2: leaders send empty AppendEntries during idle
        periods; dissertation 6.4: a numbered round confirms leadership for reads).
        Every voter gets every round. A non-voter gets it only when it has news or
        needs repair, and otherwise every ``nonvoter_heartbeat_rounds``-th round (the
        idle non-voter rule, RaftConfig): it is in no quorum, so its rounds only keep
        its leader contact fresh."""
        self._round_pending = False
        self._read_seq += 1
        seq = self._read_seq
        self._hb_rounds.append((seq, now))
        if len(self._hb_rounds) > 1024:
            self._hb_rounds.popleft()
        commit = self.commit_index
        voters = self.configuration.voters
        last = self.log.last_index
        every = self.cfg.nonvoter_heartbeat_rounds
        # Followers that are caught up get the same message: one object per distinct
        # commit value, so the driver encodes it once per round.
        made: dict[int, Heartbeat] = {}
        for sid, pr in self.progress.items():
            c = min(commit, pr.match)
            if sid not in voters and c == pr.hb_commit and pr.match == last \
                    and pr.state == REPLICATE and pr.hb_idle + 1 < every:
                pr.hb_idle += 1  # the idle non-voter rule (docstring)
                continue
            pr.hb_idle = 0
            pr.hb_commit = c
            hb = made.get(c)
            if hb is None:
                hb = made[c] = Heartbeat(self.term, self.id, c, seq)
            self._out.send(pr.address, hb, True)
            if pr.state == SNAPSHOT:
                if not pr.snap_progress:
                    self._send_snapshot(sid, pr)  # the chunk or its answer was lost
                pr.snap_progress = False
        self._advance_reads(now)

    def _handle_heartbeat_response(self, now: float, sid: str, pr: Progress,
                                   resp: HeartbeatResponse) -> None:
        pr.recent_active = True
        if resp.ctx > self._read_seq:
            self._drop("heartbeat context from the future")  # forged or corrupt
            return
        if resp.ctx > pr.read_ack:
            pr.read_ack = resp.ctx
            c = self.configuration
            if sid in c.voters or c is not self._reads_config:
                # (a non-voter's echo is in no quorum: the read rule has nothing new
                # to do unless the configuration changed since it last ran)
                self._advance_reads(now)
        last = self.log.last_index
        if pr.state == PROBE:
            pr.probe_sent = False
            self._send_append(sid, pr)
        elif pr.state == REPLICATE and pr.match < last:
            if pr.match == pr.hb_match:
                pr.become_probe()  # no progress for a heartbeat interval: messages lost
            self._send_append(sid, pr)
        pr.hb_match = pr.match

    def _advance_reads(self, now: float) -> None:
        """ReadIndex (dissertation 6.4): a read registered at commit index C is safe
        once a quorum of voters acknowledged a heartbeat round sent after it; the
        newest acknowledged round also starts the lease.

        Invariant after it runs: no round or read at or below the voters' quorum
        echo is left. Between runs that quorum rises only with a voter's echo, a
        new round (each runs this) or a new configuration (``_reads_config`` is the
        one it last ran with), so a non-voter's echo need not run it."""
        self._reads_config = self.configuration
        voters = self.configuration.voters
        progress = self.progress
        acks = [self._read_seq if sid == self.id else
                (progress[sid].read_ack if sid in progress else 0) for sid in voters]
        acked = quorum_index(acks)
        rounds = self._hb_rounds
        while rounds and rounds[0][0] <= acked:
            self._lease_start = max(self._lease_start, rounds.popleft()[1])
        reads = self._reads
        while reads and reads[0][0] <= acked:
            _seq, ctx, index = reads.popleft()
            self._out.events.append(ReadReady(ctx, index))

    def _send_timeout_now(self, pr: Progress) -> None:
        # The target may start its election whenever this arrives, even after the
        # transfer was abandoned: no lease reads for the rest of this term.
        self._lease_forfeited = True
        self._out.send(pr.address, TimeoutNow(self.term, self.id), True)

    def _lease_valid(self, now: float) -> bool:
        return (self.cfg.check_quorum and self._transfer_target is None
                and not self._lease_forfeited
                and now < self._lease_start
                + self.cfg.election_timeout * (1.0 - self.cfg.max_clock_drift))

    def _start_read(self, ctx: int, lease: bool) -> None:
        if lease and self._lease_valid(self.now):
            self._out.events.append(ReadReady(ctx, self.commit_index))
            return
        voters = self.configuration.voters
        if len(voters) == 1 and self.id in voters:
            self._out.events.append(ReadReady(ctx, self.commit_index))
            return
        if "raft-read-without-quorum" in self.cfg.mutants:
            # MUTANT: breaks ReadIndex step 3 (dissertation 6.4): no heartbeat round
            self._out.events.append(ReadReady(ctx, self.commit_index))
            return
        self._reads.append((self._read_seq + 1, ctx, self.commit_index))
        self._round_pending = True

    # ------------------------------------------------------------------ snapshots

    def _config_at(self, index: int) -> tuple[int, Configuration]:
        for ci, c in reversed(self._configs):
            if ci <= index:
                return ci, c
        return self._configs[0]

    def take_snapshot(self) -> int:
        """Snapshot the state machine at ``last_applied`` and compact the log, keeping
        ``trailing_logs`` entries behind it. Returns the snapshot index."""
        index = self.last_applied
        if index <= self.snapshot_index:
            return self.snapshot_index
        term = self.log.term_at(index)
        assert term is not None
        ci, c = self._config_at(index)
        meta = SnapshotMeta(index, term, c, ci)
        data = self.sm.snapshot()
        self._pending.append(SnapshotRecord(meta, data))
        self._snapshot = (meta, data)
        upto = index - self.cfg.trailing_logs
        if upto > self.log.base_index:
            self.log.compact(upto)
        self._prune_configs(index)
        self._dirty = True
        return index

    def _prune_configs(self, snap_index: int) -> None:
        keep = [x for x in self._configs if x[0] > snap_index]
        older = [x for x in self._configs if x[0] <= snap_index]
        self._configs = [older[-1], *keep] if older else keep

    def _send_snapshot(self, sid: str, pr: Progress) -> None:
        """InstallSnapshot (7): a follower needs entries that were compacted away; send
        the latest snapshot, one chunk in flight at a time."""
        if self._snapshot is None:
            return
        meta, data = self._snapshot
        if pr.state != SNAPSHOT or pr.snap_index != meta.index:
            pr.become_snapshot(meta.index)
        off = pr.snap_offset
        chunk = data[off:off + self.cfg.snapshot_chunk_bytes]
        done = off + len(chunk) >= len(data)
        self._out.send(pr.address, InstallSnapshot(
            self.term, self.id, meta.index, meta.term, meta.config.encode(), off, chunk, done),
            True)

    def _handle_snapshot_response(self, now: float, sid: str, pr: Progress,
                                  resp: InstallSnapshotResponse) -> None:
        pr.recent_active = True
        if pr.state != SNAPSHOT or resp.last_index != pr.snap_index:
            return
        pr.snap_progress = True
        if resp.success and resp.done:
            pr.update(resp.last_index)
            pr.become_probe()
            self._send_append(sid, pr)
            return
        size = len(self._snapshot[1]) if self._snapshot is not None else 0
        pr.snap_offset = min(max(resp.next_offset, 0), size)
        self._send_snapshot(sid, pr)

    def _handle_install_snapshot(self, now: float, src: str, req: InstallSnapshot) -> None:
        """InstallSnapshot RPC, receiver implementation: 2. create a new snapshot if
        first chunk (offset is 0); 3. write data at offset; 4. reply and wait for more
        if done is false; 5. save snapshot, discard any existing or partial snapshot
        with a smaller index; 6. if an existing log entry has the same index and term as
        the snapshot's last included entry, retain log entries following it; 7.
        discard the entire log; 8. reset the state machine using snapshot contents."""
        self._follow(now, req.sender)

        def reply(success: bool, nxt: int, done: bool) -> None:
            self._out.send(src, InstallSnapshotResponse(
                self.term, self.id, req.last_index, nxt, success, done), True)

        if req.last_index <= self.commit_index:
            reply(True, req.offset + len(req.data), True)  # we already have all of it
            return
        key = (req.term, req.last_index, req.last_term)
        if req.offset == 0:
            self._snap_key = key
            self._snap_buf = bytearray()
        elif key != self._snap_key or req.offset != len(self._snap_buf):
            reply(False, len(self._snap_buf) if key == self._snap_key else 0, False)
            return
        if len(self._snap_buf) + len(req.data) > self.cfg.max_snapshot_bytes:
            self._drop("snapshot too large")
            self._snap_key = None
            self._snap_buf = bytearray()
            reply(False, 0, False)
            return
        self._snap_buf += req.data
        if not req.done:
            reply(True, len(self._snap_buf), False)
            return
        data = bytes(self._snap_buf)
        self._snap_key = None
        self._snap_buf = bytearray()
        try:
            c = Configuration.decode(req.config)
            self.sm.restore(data)
        except ValueError:
            self._drop("bad snapshot")
            reply(False, 0, False)
            return
        idx, term = req.last_index, req.last_term
        meta = SnapshotMeta(idx, term, c, idx)
        self._pending.append(SnapshotRecord(meta, data))
        self._snapshot = (meta, data)
        if self.log.term_at(idx) == term:
            self.log.compact(idx)
            self._configs = [(idx, c), *[x for x in self._configs if x[0] > idx]]
        else:
            self.log.reset(idx, term)
            self._configs = [(idx, c)]
        self._dirty = True
        self.commit_index = idx
        self.last_applied = idx
        self._out.emit("raft.snapshot", index=idx, term=term)
        self._out.events.append(SnapshotRestored(idx, term))
        ci, cur = self._configs[-1]
        if cur != self.configuration or ci != self._config_index:
            self._set_configuration(self.now, ci, cur)
        reply(True, len(data), True)

    # ------------------------------------------------------------------ membership

    def _rollback_configs(self, first: int) -> None:
        self._configs = [x for x in self._configs if x[0] < first] or [(0, Configuration())]
        ci, c = self._configs[-1]
        self._set_configuration(self.now, ci, c)

    def _set_configuration(self, now: float, index: int, c: Configuration) -> None:
        """Membership changes (dissertation 4.1): a server uses the latest configuration
        in its log, whether or not it is committed."""
        self.configuration = c
        self._config_index = index
        self._out.emit("raft.config", index=index, voters=sorted(c.voters),
                       nonvoters=sorted(c.nonvoters))
        self._out.events.append(ConfigChanged(index, tuple(sorted(c.voters)),
                                              tuple(sorted(c.nonvoters))))
        if self.role == LEADER:
            self._commit_due = True  # a new majority may already hold (_maybe_commit)
            members = c.members()
            for sid in list(self.progress):
                if sid not in members:
                    del self.progress[sid]
            for sid in members:
                if sid != self.id and sid not in self.progress:
                    pr = Progress(c.address(sid) or "", self.log.last_index + 1,
                                  self.cfg.max_inflight)
                    pr.recent_active = True  # give it an election timeout to show up
                    self.progress[sid] = pr
                elif sid != self.id:
                    self.progress[sid].address = c.address(sid) or ""
            self.progress = dict(sorted(self.progress.items()))
            if self._transfer_target is not None and self._transfer_target not in c.voters:
                self._transfer_target = None
                self._transfer_deadline = math.inf
        else:
            voter = c.is_voter(self.id)
            if voter and self.role == NONVOTER:
                self.role = FOLLOWER
                self._reset_election_timer(now)
                self._emit_role()
            elif not voter and self.role != NONVOTER:
                self.role = NONVOTER
                self._votes = {}
                self._emit_role()

    def _check_config_change(self) -> None:
        if self.role != LEADER:
            raise NotLeader(self.leader_id, self.leader_address)
        if self._transfer_target is not None:
            raise NotLeader(None, None, "leadership transfer in progress")
        if not self._committed_own_term:
            raise ConfigChangeInProgress("the leader has not committed an entry of its term yet")
        if self._config_index > self.commit_index:
            raise ConfigChangeInProgress(
                f"configuration entry {self._config_index} is not committed yet")

    def _append_config(self, now: float, c: Configuration) -> int:
        self.log.append([Entry(self.term, ENTRY_CONFIG, c.encode())])
        self._dirty = True
        index = self.log.last_index
        self._configs.append((index, c))
        self._set_configuration(now, index, c)
        self._append_pending = True
        return index

    @_step
    def add_voter(self, now: float, server_id: str, address: str) -> int:
        """Add a voter (or promote a non-voter). Returns the index of the configuration
        entry (the change is in effect when it is committed)."""
        self.now = now
        self._check_config_change()
        c = self.configuration
        if c.voters.get(server_id) == address:
            return self._config_index
        nonvoters = {k: v for k, v in c.nonvoters.items() if k != server_id}
        return self._append_config(now, Configuration.make({**c.voters, server_id: address},
                                                           nonvoters))

    @_step
    def add_nonvoter(self, now: float, server_id: str, address: str) -> int:
        """Add a non-voter (learner): it receives the log but does not vote."""
        self.now = now
        self._check_config_change()
        c = self.configuration
        if server_id in c.voters:
            raise UnknownServer(f"{server_id} is a voter; remove it first to demote it")
        if c.nonvoters.get(server_id) == address:
            return self._config_index
        return self._append_config(now, Configuration.make(dict(c.voters),
                                                           {**c.nonvoters, server_id: address}))

    @_step
    def remove_server(self, now: float, server_id: str) -> int:
        """Remove a voter or non-voter; removing the leader itself makes it step down
        once the change is committed."""
        self.now = now
        self._check_config_change()
        c = self.configuration
        if server_id not in c.voters and server_id not in c.nonvoters:
            raise UnknownServer(f"{server_id} is not a member")
        voters = {k: v for k, v in c.voters.items() if k != server_id}
        if not voters:
            raise UnknownServer("cannot remove the last voter")
        nonvoters = {k: v for k, v in c.nonvoters.items() if k != server_id}
        index = self._append_config(now, Configuration.make(voters, nonvoters))
        return index

    @_step
    def transfer_leadership(self, now: float, target: str | None = None) -> str:
        """Leadership transfer (dissertation 3.10): bring ``target`` (default: the most
        up-to-date other voter) up to date, then send it TimeoutNow. Proposals are
        refused meanwhile; the transfer is abandoned after an election timeout."""
        self.now = now
        if self.role != LEADER:
            raise NotLeader(self.leader_id, self.leader_address)
        voters = [v for v in self.configuration.voters if v != self.id]
        if target is None:
            if not voters:
                raise UnknownServer("no other voter to transfer leadership to")
            target = max(voters, key=lambda v: (self.progress[v].match, v))
        if target not in voters or target not in self.progress:
            raise UnknownServer(f"{target} is not another voter")
        self._transfer_target = target
        self._transfer_deadline = now + self.cfg.election_timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            self._send_timeout_now(pr)
        elif pr.state != SNAPSHOT:
            pr.become_probe()  # re-send from its match: catch it up without delay
            self._send_append(target, pr)
        return target

    # ------------------------------------------------------------------ client API

    def _check_leading(self) -> None:
        """Proposals go to a leader that is not handing over leadership."""
        if self.role != LEADER:
            raise NotLeader(self.leader_id, self.leader_address)
        if self._transfer_target is not None:
            raise NotLeader(None, None, "leadership transfer in progress")

    def propose(self, now: float, command: bytes) -> tuple[int, int]:
        """Rules for Servers, Leaders: if command received from client: append entry to
        local log, respond after entry applied to state machine (5.3). Returns
        ``(index, term)``; the result arrives as an :class:`Applied` event."""
        try:  # an input: it ends its step however it returns (as ``_step``)
            self.now = now
            self._check_leading()
            if type(command) is not bytes:
                raise TypeError("a command must be bytes")
            if len(command) > self.cfg.max_proposal_bytes:
                raise ProposalTooLarge(len(command), self.cfg.max_proposal_bytes)
            log = self.log
            log.append([Entry(self.term, ENTRY_COMMAND, command)])
            if self._parallel:
                self._own_unsynced = True  # synced in parallel with the AppendEntries
            else:
                self._dirty = True
            self._append_pending = True
            return log.last_index, self.term
        finally:
            self._end_step()

    def propose_many(self, now: float, commands: list[bytes]) -> list[tuple[int, int]]:
        """Propose a batch at once (one log append); all-or-nothing validation."""
        try:  # an input: it ends its step however it returns (as ``_step``)
            self.now = now
            self._check_leading()
            limit = self.cfg.max_proposal_bytes
            for c in commands:
                if type(c) is not bytes:
                    raise TypeError("a command must be bytes")
                if len(c) > limit:
                    raise ProposalTooLarge(len(c), limit)
            first = self.log.last_index + 1
            term = self.term
            self.log.append([Entry(term, ENTRY_COMMAND, c) for c in commands])
            if self._parallel:
                self._own_unsynced = True  # synced in parallel with the AppendEntries
            else:
                self._dirty = True
            self._append_pending = True
            return [(first + i, term) for i in range(len(commands))]
        finally:
            self._end_step()

    @_step
    def read_index(self, now: float, ctx: int, lease: bool = False) -> None:
        """Linearizable read (ReadIndex, dissertation 6.4): answered later by
        ``ReadReady(ctx, index)`` once this leader confirmed its leadership with a
        quorum heartbeat round and has committed an entry of its term; the read may be
        served when ``last_applied >= index`` (at once on the leader). With ``lease``
        (and CheckQuorum on), the read is confirmed without a round while the lease
        holds (see docs/raft.md for the clock assumption). ``ReadFailed`` if leadership
        is lost first."""
        self.now = now
        if self.role != LEADER:
            raise NotLeader(self.leader_id, self.leader_address)
        if not self._committed_own_term:
            self._reads_waiting.append((ctx, lease))
            return
        self._start_read(ctx, lease)

    # ------------------------------------------------------------------ helpers

    def _save_hard_state(self) -> None:
        """Term and vote are recorded as soon as they change (before any entry of the
        new term) and are durable before the step's messages leave; the commit index
        is recorded at the end of a step and synced with the next durable batch."""
        hs = self._saved_hs = HardState(self.term, self.vote, self.commit_index)
        self._pending.append(new_record(HardStateRecord, (hs,)))
        self._dirty = True

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _set_leader(self, leader: str | None) -> None:
        if leader != self.leader_id:
            self.leader_id = leader
            self._out.events.append(LeaderChanged(leader, self.leader_address, self.term))

    def _emit_role(self) -> None:
        key = (self.role, self.term)
        if key != self._emitted_role:
            self._emitted_role = key
            self._out.emit("raft.role", term=self.term, role=self.role)
            self._out.events.append(RoleChanged(self.role, self.term, self.leader_id))
