"""The coordinator: one node's cluster logic as a pure, sans-I/O core (port 8400).

It owns no protocol state of its own that another node depends on: the replicated
part lives in the Raft log (:mod:`.statemachine`). It *reads* three things through
read-only views the glue hands it at construction -- the Raft core (role, term,
configuration, progress), the gossip core (member list, tags) and the cluster state
machine -- and it *acts* only through its outputs:

* public events: actions for the glue to carry out on the Raft driver
  (:class:`Propose`, :class:`AddNonVoter`, :class:`AddVoter`, :class:`RemoveServer`,
  :class:`TransferLeadership`) and :class:`StateChanged` for subscribers;
* messages: :class:`~.messages.Ack` to the proposing leader's coordination port;
* trace records: ``cluster.state``, ``cluster.shardmap``, ``cluster.ack``.

Inputs (besides ``start``/``on_message``/``on_tick``), all through ``driver.call`` by
the glue, in the order the other drivers produced them: :meth:`raft_changed`,
:meth:`members_changed`, :meth:`applied` (cluster log results, strictly in log
order), :meth:`resync`, :meth:`action_failed`.

Invariants:

* a node never uses a proposal: ``shard_map()`` is the last *committed* map it
  processed, and log results are processed in index order (checked: an out-of-order
  result is dropped and counted);
* the leader has at most one round (proposal -> acks -> commit) in flight, and a
  commit names exactly the nodes of its proposal;
* at most one membership action is outstanding; the next one waits for a
  configuration entry to commit (or a retry timer).
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from clusterfunk import wire
from clusterfunk.cluster.messages import (
    Ack,
    Bootstrap,
    LeaveRequest,
    ProposedShardMap,
    ShardMapCommitted,
)
from clusterfunk.cluster.statemachine import (
    BootstrapApplied,
    ClusterStateMachine,
    CommitApplied,
    Ignored,
    MapRecord,
    ProposalApplied,
)
from clusterfunk.runtime.api import Output
from clusterfunk.sharding import ShardMap

PORT = 8400

# Node states.
INVALID = "invalid"
STARTING = "starting"
JOINING = "joining"
OPERATIONAL = "operational"
VOTING = "voting"
RESHARDING = "resharding"
STOPPING = "stopping"
STATES = (INVALID, STARTING, JOINING, OPERATIONAL, VOTING, RESHARDING, STOPPING)

# Roles.
UNKNOWN = "unknown"
FOLLOWER = "follower"
LEADER = "leader"
NONVOTER = "nonvoter"
NONMEMBER = "nonmember"
ROLES = (UNKNOWN, FOLLOWER, LEADER, NONVOTER, NONMEMBER)

#: Gossip tag names.
TAG_RAFT = "ep.raft"
TAG_SERF = "ep.serf"
TAG_MANAGEMENT = "ep.clusterfunk.management"
TAG_SERVICE = "meta.serviceName"

_LIVE = ("alive", "suspect")
_GONE = ("dead", "left")


@attrs.frozen
class CoordinatorConfig:
    """Tunables (seconds of the local clock).

    * ``voters`` (3): target number of Raft voters; the rest are non-voters.
    * ``ack_timeout`` (0.5): a node that has not acked a proposal this long after the
      leader applied it is quarantined and the round repeats without it.
    * ``reshard_delay`` (0.5): a new leader reshards this long after winning.
    * ``reshard_max_delay`` (2.0): a pending member-set change waits at most this long
      for the reconciler to finish before a reshard is proposed anyway.
    * ``reconcile_interval`` (0.5): the leader re-runs the reconciler this often.
    * ``round_timeout`` (3.0): a proposal or commit entry not applied this long after it
      was proposed is given up (the round restarts).
    * ``retry_interval`` (0.1): wait after a refused membership change.
    * ``quarantine_time`` (10.0): a quarantined node is tried again (included in the
      next proposal) after this long, unless an ack let it back in earlier.
    * ``unresponsive_after`` (2.0): a Raft member whose heartbeat echoes (its
      ``Progress.read_ack``) have not advanced for this long is left out of new maps
      until they advance again (0 disables). Faster than gossip failure detection.
    * ``wall_offset`` (0.0): added to the local clock for the creation time in the
      ``Bootstrap`` entry (the Trio host passes ``time.time() - trio.current_time()``).
    """

    voters: int = 3
    ack_timeout: float = 0.5
    reshard_delay: float = 0.5
    reshard_max_delay: float = 2.0
    reconcile_interval: float = 0.5
    round_timeout: float = 3.0
    retry_interval: float = 0.1
    quarantine_time: float = 10.0
    unresponsive_after: float = 2.0
    wall_offset: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.voters < 1:
            raise ValueError("voters must be >= 1")
        for name in ("ack_timeout", "reconcile_interval", "round_timeout", "retry_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


# -- actions (public events the glue carries out) --------------------------------


@attrs.frozen
class Propose:
    commands: tuple[bytes, ...]


@attrs.frozen
class AddNonVoter:
    server: str
    address: str


@attrs.frozen
class AddVoter:
    server: str
    address: str


@attrs.frozen
class RemoveServer:
    server: str


@attrs.frozen
class TransferLeadership:
    pass


@attrs.frozen
class StateChanged:
    state: str
    role: str


Action = Propose | AddNonVoter | AddVoter | RemoveServer | TransferLeadership


@attrs.define
class Round:
    """The leader's reshard in flight: ``phase`` is ``proposed`` (waiting for the
    proposal to apply), ``acking`` (collecting acks), or ``committing``."""

    term: int
    nodes: tuple[str, ...]
    phase: str
    deadline: float
    index: int = 0
    acked: set[str] = attrs.Factory(set)


class CoordinatorCore:
    """See the module docstring. ``raft`` is None for a gossip-only (nonmember) node."""

    def __init__(
        self,
        node_id: str,
        address: str,
        rng: random.Random,
        *,
        raft: Any,
        gossip: Any,
        sm: ClusterStateMachine,
        weights: int | list[int] | list[float] = 10_000,
        config: CoordinatorConfig | None = None,
    ) -> None:
        self.id = node_id
        self.address = address
        self.rng = rng
        self.raft = raft
        self.gossip = gossip
        self.sm = sm
        self.weights = weights
        self.cfg = config if config is not None else CoordinatorConfig()
        self._out = Output()
        self.state = STARTING
        self.role = NONMEMBER if raft is None else UNKNOWN
        self._stopping = False
        self._invalid = False
        #: last committed map record processed, and a later proposal (if any)
        self.committed: MapRecord | None = None
        self.pending: MapRecord | None = None
        self.last_index = 0  # index of the last log result processed
        self.created: float | None = None
        self.stats: dict[str, int] = {}
        # leader state
        self.term = 0
        self.round: Round | None = None
        #: node -> (index of the proposal it missed, local time it expires)
        self.quarantined: dict[str, tuple[int, float]] = {}
        self._resharded_term = -1  # term in which this leader committed a map
        self._reshard_at = math.inf  # election reshard time
        self._change_since = math.inf  # when the member set started to differ
        self._reconcile_at = math.inf
        self._member_action_wait = False
        self._member_action_at = -math.inf
        self._retry_at = -math.inf
        self._backoff_until = -math.inf
        self._bootstrap_proposed_term = -1
        self.leaving: set[str] = set()  # members that asked to be removed (leader)
        #: member -> (last heartbeat round it echoed, local time that value was first seen)
        self._echo: dict[str, tuple[int, float]] = {}
        self.unresponsive: set[str] = set()
        self.now = 0.0

    # ------------------------------------------------------------------ Core

    def start(self, now: float) -> None:
        self.now = now
        self._update_state(now)

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.now = now
        if isinstance(msg, Ack):
            self._on_ack(now, msg)
        elif isinstance(msg, LeaveRequest):
            self._on_leave_request(now, msg)
        else:
            self._count("unexpected message")

    def on_tick(self, now: float) -> None:
        self.now = now
        if self.role != LEADER:
            return
        r = self.round
        if r is not None and now >= r.deadline:
            if r.phase == "acking":
                self._ack_timeout(now, r)
            else:
                self._count(f"round timeout ({r.phase})")
                self.round = None
        if now >= self._reconcile_at:
            self._reconcile_at = now + self.cfg.reconcile_interval
        self._leader_step(now)

    def next_deadline(self) -> float:
        """The earliest leader timer still in the future (a timer at or before the last
        input's ``now`` has been served by that input)."""
        if self.role != LEADER:
            return math.inf
        now = self.now
        times = [self._reconcile_at, self._retry_at]
        times += [until for _i, until in self.quarantined.values()]
        if self.round is not None:
            times.append(self.round.deadline)
        else:
            times += [self._reshard_at, self._change_since + self.cfg.reshard_max_delay,
                      self._backoff_until]
        future = [t for t in times if t > now]
        return min(future) if future else math.inf

    def drain(self) -> Output | None:
        out = self._out
        if not out:
            return None
        self._out = Output()
        return out

    # ------------------------------------------------------------------ inputs from the glue

    def raft_changed(self, now: float, config_committed: bool = False) -> None:
        """The Raft core's role, leader or configuration changed (``config_committed``:
        a configuration or no-op entry was applied)."""
        self.now = now
        raft = self.raft
        if raft is None:
            return
        if config_committed:
            self._member_action_wait = False
        was_leader = self.role == LEADER
        self._update_state(now)
        is_leader = self.role == LEADER
        if is_leader and (not was_leader or raft.term != self.term):
            self._become_leader(now)
        elif not is_leader and was_leader:
            self._stop_leading()
        if is_leader:
            self._leader_step(now)

    def members_changed(self, now: float) -> None:
        """The gossip member list changed (any member event)."""
        self.now = now
        if self.raft is None:
            self._update_state(now)  # a gossip-only client is operational once joined
        if self.role == LEADER:
            self._leader_step(now)

    def applied(self, now: float, result: Any) -> None:
        """A cluster-log result, strictly in log order."""
        self.now = now
        index = result.index
        if index <= self.last_index:
            self._count("result out of order")
            return
        self.last_index = index
        if isinstance(result, ProposalApplied):
            self._on_proposal(now, result.record)
        elif isinstance(result, CommitApplied):
            self._on_commit(now, result.record)
        elif isinstance(result, BootstrapApplied):
            self.created = result.created
        elif isinstance(result, Ignored):
            self._count(f"ignored entry: {result.reason}")
        self._update_state(now)
        if self.role == LEADER:
            self._leader_step(now)

    def resync(self, now: float, last_applied: int) -> None:
        """Load the state machine's state as of ``last_applied`` (after a restart or a
        snapshot restore): the committed map, a pending proposal (acked again)."""
        self.now = now
        sm = self.sm
        self.last_index = max(self.last_index, last_applied)
        self.created = sm.created
        if sm.committed is not None and (
            self.committed is None or sm.committed.index != self.committed.index
        ):
            self.committed = sm.committed
            self._emit_map("committed", sm.committed)
        p = sm.proposal
        if p is not None and (self.pending is None or self.pending.index != p.index):
            self.pending = p
            self._emit_map("proposed", p)
            if p.leader != self.id:
                self._out.send(p.ack, Ack(self.id, p.index), True)
        elif p is None:
            self.pending = None
        self._update_state(now)

    def action_failed(self, now: float, action: Any, error: str) -> None:
        """The glue could not carry out ``action`` (the Raft core refused it)."""
        self.now = now
        self._count(f"action refused: {type(action).__name__}")
        if isinstance(action, Propose):
            if self.round is not None and self.round.phase in ("proposed", "committing"):
                self.round = None
                self._backoff_until = now + self.cfg.retry_interval
        else:
            self._member_action_wait = False
            self._retry_at = now + self.cfg.retry_interval

    def set_stopping(self, now: float) -> None:
        self.now = now
        self._stopping = True
        self._update_state(now)

    def request_leave(self, now: float) -> bool:
        """Graceful stop of a Raft member: state ``stopping`` and a LeaveRequest to the
        leader's coordination address (call again to resend). Returns True once this
        node is no longer in the Raft configuration it knows."""
        self.set_stopping(now)
        raft = self.raft
        if raft is None or self.id not in raft.configuration.members():
            return True
        leader = raft.leader_id
        if leader is None or leader == self.id or self.gossip is None:
            return False
        m = self.gossip.member(leader)
        addr = m.tags.get(TAG_MANAGEMENT) if m is not None else None
        if addr:
            self._out.send(addr, LeaveRequest(self.id), True)
        return False

    def _on_leave_request(self, now: float, msg: LeaveRequest) -> None:
        """Leave rule: the leader removes a member that asks to leave (like a gossip
        ``left``), and keeps it out of the map."""
        if self.role != LEADER:
            self._count("leave request while not leader")
            return
        if msg.node != self.id:
            self.leaving.add(msg.node)
            self._leader_step(now)

    def set_invalid(self, now: float) -> None:
        self.now = now
        self._invalid = True
        self._update_state(now)

    # ------------------------------------------------------------------ state

    def _raft_role(self) -> str:
        raft = self.raft
        if raft is None:
            return NONMEMBER
        r = raft.role
        if r == "leader":
            return LEADER
        if r in ("follower", "precandidate", "candidate"):
            return FOLLOWER
        return NONVOTER if self.id in raft.configuration.nonvoters else UNKNOWN

    def _update_state(self, now: float) -> None:
        """Node state (docs/cluster.md): invalid / stopping override; an election in
        progress is ``voting``; a pending proposal (or the leader's round) is
        ``resharding``; being in the committed map is ``operational``; else ``joining``."""
        role = self._raft_role()
        if self._invalid:
            state = INVALID
        elif self._stopping:
            state = STOPPING
        elif self.raft is not None and self.raft.role in ("precandidate", "candidate"):
            state = VOTING
        elif self.pending is not None or (role == LEADER and self.round is not None):
            state = RESHARDING
        elif self.raft is None:
            state = OPERATIONAL if self.gossip is not None and self.gossip.joined else JOINING
        elif self.committed is not None and self.id in self.committed.nodes:
            state = OPERATIONAL
        else:
            state = JOINING
        if (state, role) != (self.state, self.role):
            self.state = state
            self.role = role
            self._out.emit("cluster.state", state=state, role=role)
            self._out.events.append(StateChanged(state, role))

    def _emit_map(self, phase: str, rec: MapRecord) -> None:
        self._out.emit(
            "cluster.shardmap",
            phase=phase,
            index=rec.index,
            nodes=list(rec.nodes),
            digest=rec.digest,
            moved=rec.moved,
        )

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # ------------------------------------------------------------------ every node: the log

    def _on_proposal(self, now: float, rec: MapRecord) -> None:
        """Apply rule for ProposedShardMap: load it as *proposed* (never used before it
        is committed) and ack it to the proposing leader; the leader acks itself."""
        self.pending = rec
        self._emit_map("proposed", rec)
        r = self.round
        if rec.leader == self.id:
            if (
                r is not None and r.phase == "proposed" and r.term == rec.term
                and self.role == LEADER and self.raft.term == rec.term
            ):
                r.phase = "acking"
                r.index = rec.index
                r.nodes = rec.nodes
                r.deadline = now + self.cfg.ack_timeout
                self._record_ack(now, r, self.id)
        else:
            self._out.send(rec.ack, Ack(self.id, rec.index), True)

    def _on_commit(self, now: float, rec: MapRecord) -> None:
        """Apply rule for ShardMapCommitted: the named proposal is now in force."""
        self.committed = rec
        if self.pending is not None and self.pending.index <= rec.index:
            self.pending = None
        self._emit_map("committed", rec)
        r = self.round
        if r is not None and r.phase == "committing" and r.index == rec.index:
            self.round = None
            self._resharded_term = r.term

    # ------------------------------------------------------------------ leader

    def _become_leader(self, now: float) -> None:
        self.term = self.raft.term
        self.round = None
        self.quarantined = {}
        self.leaving = set()
        self._echo = {}
        self.unresponsive = set()
        self._reshard_at = now + self.cfg.reshard_delay
        self._change_since = math.inf
        self._reconcile_at = now
        self._member_action_wait = False
        self._retry_at = -math.inf
        self._backoff_until = -math.inf

    def _stop_leading(self) -> None:
        self.round = None
        self.leaving = set()
        self.quarantined = {}
        self._reshard_at = math.inf
        self._change_since = math.inf
        self._reconcile_at = math.inf

    def _leader_step(self, now: float) -> None:
        if self.role != LEADER or self.raft is None or self.raft.role != "leader":
            return
        pending_change = self._reconcile(now)
        self._check_responsive(now)
        self._maybe_reshard(now, pending_change)
        self._update_state(now)

    def _reconcile(self, now: float) -> bool:
        """Membership rule: gossip drives Raft. Compares the full gossip member list
        with the Raft configuration and makes at most one change (remove a dead/left
        server; add a live ``ep.raft`` member as non-voter; promote a caught-up live
        non-voter while voters < target). Returns whether a change is still wanted."""
        raft = self.raft
        cfg = raft.configuration
        members = self.gossip.members() if self.gossip is not None else []
        live: dict[str, Any] = {}
        gone: set[str] = set()
        for m in members:
            if m.status in _LIVE:
                live[m.name] = m
            elif m.status in _GONE:
                gone.add(m.name)
        for q, (_i, until) in list(self.quarantined.items()):
            if (q not in cfg.voters and q not in cfg.nonvoters) or now >= until:
                del self.quarantined[q]
        action: Action | None = None
        # a leaver stays "leaving" until gossip reports it left (or forgets it): it must
        # not be re-added while its gossip entry still says alive
        self.leaving = {n for n in self.leaving if n in live}
        for sid in [*cfg.voters, *cfg.nonvoters]:
            if sid != self.id and ((sid in gone and sid not in live) or sid in self.leaving):
                action = RemoveServer(sid)
                break
        if action is None:
            for name in sorted(live):
                addr = live[name].tags.get(TAG_RAFT)
                if not addr or name in self.leaving:
                    continue
                if name in cfg.voters:
                    if cfg.voters[name] != addr and name != self.id:
                        action = AddVoter(name, addr)
                        break
                elif cfg.nonvoters.get(name) != addr:
                    action = AddNonVoter(name, addr)
                    break
        if action is None and len(cfg.voters) < self.cfg.voters:
            commit = raft.commit_index
            progress = raft.progress
            for sid, addr in cfg.nonvoters.items():
                m = live.get(sid)
                pr = progress.get(sid)
                if m is not None and m.status == "alive" and pr is not None and \
                        pr.match >= commit and sid not in self.quarantined and \
                        sid not in self.leaving and sid not in self.unresponsive:
                    action = AddVoter(sid, addr)
                    break
        if action is None:
            return False
        waiting = self._member_action_wait and now < self._member_action_at + \
            self.cfg.round_timeout  # a lost commit event must not block forever
        if waiting or now < self._retry_at:
            return True
        self._member_action_wait = True
        self._member_action_at = now
        self._out.events.append(action)
        return True

    def _check_responsive(self, now: float) -> None:
        """Liveness rule (the leader's fast failure detector, on Raft heartbeats): a
        member whose heartbeat echoes stalled for ``unresponsive_after`` is
        unresponsive until they advance again."""
        limit = self.cfg.unresponsive_after
        if limit <= 0:
            return
        progress = self.raft.progress
        echo = self._echo
        out: set[str] = set()
        for sid, pr in progress.items():
            ack = pr.read_ack
            seen = echo.get(sid)
            if seen is None or seen[0] != ack:
                echo[sid] = (ack, now)
            elif now - seen[1] >= limit:
                out.add(sid)
        for sid in [s for s in echo if s not in progress]:
            del echo[sid]
        self.unresponsive = out

    def _target_nodes(self) -> tuple[str, ...]:
        cfg = self.raft.configuration
        gone: set[str] = set()
        if self.gossip is not None:
            gone = {m.name for m in self.gossip.members() if m.status in _GONE}
        nodes = [
            n for n in [*cfg.voters, *cfg.nonvoters]
            if n == self.id or (n not in self.quarantined and n not in gone
                                and n not in self.leaving and n not in self.unresponsive)
        ]
        return tuple(sorted(nodes))

    def _maybe_reshard(self, now: float, pending_change: bool) -> None:
        """Resharding rule: on a change of the Raft member set (once the reconciler is
        done, or after ``reshard_max_delay``) and once per term ``reshard_delay`` after
        winning the election, propose ``ShardMap.update(sorted nodes)`` of the last
        committed map."""
        if self.round is not None or now < self._reshard_at or now < self._backoff_until:
            return
        target = self._target_nodes()
        committed = self.sm.committed
        same = committed is not None and committed.nodes == target
        if same and self._resharded_term == self.term:
            self._change_since = math.inf
            return
        if self._change_since == math.inf:
            self._change_since = now
        if pending_change and self._resharded_term == self.term and \
                now < self._change_since + self.cfg.reshard_max_delay:
            return
        self._propose_map(now, target)

    def _propose_map(self, now: float, target: tuple[str, ...]) -> None:
        base = self.sm.committed_map()
        if base is None:
            base = ShardMap(self.weights)
        new, report = base.update(target)
        blob = new.encode()
        entry = ProposedShardMap(self.id, self.term, self.address, tuple(new.nodes),
                                 report.moved, blob)
        commands = [wire.encode(entry)]
        if self.sm.created is None and self._bootstrap_proposed_term != self.term:
            self._bootstrap_proposed_term = self.term
            commands.insert(0, wire.encode(Bootstrap(now + self.cfg.wall_offset)))
        self.round = Round(self.term, tuple(new.nodes), "proposed", now + self.cfg.round_timeout)
        self._change_since = math.inf
        self._out.events.append(Propose(tuple(commands)))

    def _on_ack(self, now: float, msg: Ack) -> None:
        """Ack rule: the leader counts acks for its round's proposal index; an ack from a
        quarantined node for a proposal at or after the one it missed lets it back in."""
        if self.role != LEADER:
            self._count("ack while not leader")
            return
        r = self.round
        if r is not None and r.phase == "acking" and msg.index == r.index \
                and msg.node in r.nodes:
            self._record_ack(now, r, msg.node)
            return
        q = self.quarantined.get(msg.node)
        if q is not None and msg.index >= q[0]:
            del self.quarantined[msg.node]
            self._out.emit("cluster.ack", **{"from": msg.node, "index": msg.index})
            self._leader_step(now)
            return
        self._count("stale ack")

    def _record_ack(self, now: float, r: Round, node: str) -> None:
        if node in r.acked:
            return
        r.acked.add(node)
        self._out.emit("cluster.ack", **{"from": node, "index": r.index})
        if len(r.acked) == len(r.nodes):
            r.phase = "committing"
            r.deadline = now + self.cfg.round_timeout
            commit = ShardMapCommitted(r.index, r.nodes)
            self._out.events.append(Propose((wire.encode(commit),)))

    def _ack_timeout(self, now: float, r: Round) -> None:
        """Ack timeout rule: nodes that did not ack are quarantined and the round repeats
        without them; if nobody but the leader acked, the leader hands leadership over."""
        missing = [n for n in r.nodes if n not in r.acked]
        self.round = None
        until = now + self.cfg.quarantine_time
        for n in missing:
            self.quarantined[n] = (r.index, until)
        self._count("ack timeouts")
        if r.acked == {self.id} and len(r.nodes) > 1:
            # nobody else could ack: hand leadership to a voter that may do better; if
            # that is refused (no other voter) the next round goes on without them
            self._count("nobody acked")
            self._backoff_until = now + self.cfg.round_timeout
            self._out.events.append(TransferLeadership())
