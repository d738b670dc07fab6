"""The coordinator: one node's cluster logic as a pure, sans-I/O core (port 8400).

It owns no protocol state of its own that another node depends on: the replicated
part lives in the Raft log (:mod:`.statemachine`). It *reads* three things -- its Raft
server through a :class:`~.views.RaftView` (role, term, configuration, per-follower
progress), gossip membership through a :class:`~.views.MembershipView` (member list,
statuses, tags) and the cluster state machine -- and it *acts* only through its
outputs:

* public events: actions for the glue to carry out on the Raft driver
  (:class:`Propose`, :class:`AddNonVoter`, :class:`AddVoter`, :class:`RemoveServer`,
  :class:`TransferLeadership`) and :class:`StateChanged` for subscribers;
* messages: :class:`~.messages.Ack` to the proposing leader's coordination port,
  :class:`~.messages.LeaveRequest` to the leader's;
* trace records: ``cluster.state``, ``cluster.shardmap``, ``cluster.ack``.

Inputs (besides ``start``/``on_message``/``on_tick``), all through ``driver.call`` by
the glue, in the order the other drivers produced them: :meth:`raft_changed`,
:meth:`members_changed`, :meth:`applied` (cluster log results, strictly in log
order), :meth:`resync`, :meth:`action_failed`; and from the node's owner
:meth:`set_stopping` / :meth:`request_leave` / :meth:`remove_member` /
:meth:`set_voter_target`.

Every rule (docs/cluster.md) is one method whose docstring starts with its name:
state and role derivation (:meth:`_raft_role`, :meth:`_update_state`), the apply
rules (:meth:`_on_proposal`, :meth:`_on_commit`), membership reconciliation
(:meth:`_reconcile` over :meth:`_removal`, :meth:`_addition`, :meth:`_promotion`,
:meth:`_demotion`, with :meth:`_expire_quarantine`; the voter target,
:meth:`set_voter_target`), the fast failure detector
(:meth:`_check_responsive`), resharding (:meth:`_maybe_reshard`, :meth:`_stranded_proposal`,
:meth:`_propose_map`, :meth:`_bootstrap_entry`), acks (:meth:`_on_ack`,
:meth:`_record_ack`), timeouts (:meth:`_ack_timeout`, :meth:`_round_timeout`) and
leaving (:meth:`request_leave`, :meth:`_on_leave_request`).

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

import enum
import math
import random
from collections.abc import Sequence
from typing import Any

import attrs

from clusterfunk import wire
from clusterfunk.cluster.messages import (
    Ack,
    Bootstrap,
    LeaveRequest,
    ProposedShardMap,
    ShardMapCommitted,
    VoterTarget,
)
from clusterfunk.cluster.statemachine import (
    BootstrapApplied,
    ClusterResult,
    ClusterStateMachine,
    CommitApplied,
    Ignored,
    MapRecord,
    ProposalApplied,
    VotersApplied,
)
from clusterfunk.cluster.views import MemberInfo, MembershipView, RaftView
from clusterfunk.gossip.messages import Status
from clusterfunk.raft.roles import Role
from clusterfunk.runtime.api import Outbox, Output
from clusterfunk.sharding import ShardMap

PORT = 8400


class NodeState(enum.StrEnum):
    """A node's cluster state (docs/cluster.md; the ``state`` of ``cluster.state``)."""

    INVALID = "invalid"  # reserved: nothing sets it (a corrupt store fails startup)
    STARTING = "starting"
    JOINING = "joining"
    OPERATIONAL = "operational"
    VOTING = "voting"
    RESHARDING = "resharding"
    STOPPING = "stopping"


class NodeRole(enum.StrEnum):
    """A node's cluster role (docs/cluster.md; the ``role`` of ``cluster.state``)."""

    UNKNOWN = "unknown"  # not (yet) a server of the Raft configuration it knows
    FOLLOWER = "follower"  # a voter that is not leader (campaigning included)
    LEADER = "leader"
    NONVOTER = "nonvoter"
    NONMEMBER = "nonmember"  # a gossip-only client


class Phase(enum.StrEnum):
    """The phase of the leader's reshard round."""

    PROPOSED = "proposed"  # the proposal entry is not applied yet
    ACKING = "acking"  # collecting the acks of the proposal's nodes
    HOLDING = "holding"  # every ack in; the commit waits (takeover / left-out holder rules)
    COMMITTING = "committing"  # the commit entry is not applied yet


INVALID = NodeState.INVALID
STARTING = NodeState.STARTING
JOINING = NodeState.JOINING
OPERATIONAL = NodeState.OPERATIONAL
VOTING = NodeState.VOTING
RESHARDING = NodeState.RESHARDING
STOPPING = NodeState.STOPPING

UNKNOWN = NodeRole.UNKNOWN
FOLLOWER = NodeRole.FOLLOWER
LEADER = NodeRole.LEADER
NONVOTER = NodeRole.NONVOTER
NONMEMBER = NodeRole.NONMEMBER

#: The freeze rule, in fractions of the lease: a member ticks every FREEZE_TICK; a gap
#: over FREEZE_GAP between ticks is a freeze (well below unresponsive_after: only a
#: freeze that long can lose the node its shards); after one, only leader messages
#: received THAW_GRACE after the thaw count (docs/cluster.md).
FREEZE_TICK = 1 / 3
FREEZE_GAP = 2 / 3
THAW_GRACE = 1 / 4

#: Seconds added to a lease bound for clock drift and message delay (the takeover and
#: left-out holder rules; docs/cluster.md).
LEASE_MARGIN = 0.5

#: Gossip tag names.
TAG_RAFT = "ep.raft"
TAG_SERF = "ep.serf"
#: the coordination port (acks, leave requests): every member publishes it
TAG_COORD = "ep.clusterfunk.coord"
#: the management HTTP API (published by the management server, not by this core)
TAG_MANAGEMENT = "ep.clusterfunk.management"
TAG_SERVICE = "meta.serviceName"


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
    * ``unresponsive_after`` (2.5): a Raft member whose heartbeat echoes (the last
      heartbeat round it echoed, :meth:`~.views.RaftView.heartbeat_echo`) have not
      advanced for this long is left out of new maps until they advance again (0
      disables). Faster than gossip failure detection. Must exceed the longest
      heartbeat period plus ``lease * (1 + max_clock_drift)`` (:func:`timing_errors`).
    * ``wall_offset`` (0.0): added to the local clock for the creation time in the
      ``Bootstrap`` entry (the Trio host passes ``time.time() - trio.current_time()``).
    * ``lease`` (1.5): shard lease. A member serves shards only while its Raft server
      heard from a leader of its term (the leader: passed CheckQuorum) within this
      long; past it, it releases every shard (fencing rule) and gains shards again only
      at the next commit it applies. Must stay below ``unresponsive_after`` minus the
      clock drift and message delay allowances (docs/cluster.md); 0 disables it.
    * ``takeover_wait`` (3.0): a new leader commits no map that takes shards from
      nodes that did not ack until this long after it won (the takeover rule): at
      least the Raft election timeout (the old leader's CheckQuorum) plus ``lease``
      plus drift and delay allowances (docs/cluster.md, :func:`timing_errors`).
    * ``gain_retry`` (0.1): a gain blocked by the lease or by catching up is tried
      again this often.
    * ``freeze_watch`` (True): the freeze rule -- a member ticks every ``lease / 3``
      and a gap of more than ``2 * lease / 3`` between ticks means it was frozen
      (docs/cluster.md); False disables it (as ``lease = 0`` disables the lease).
    * ``release_wait`` (1.0): a commit that takes shards from a node left out of the
      proposal that the leader still hears waits at most this long (after the
      leader applied the proposal) for that node's ack of it (left-out holder rule).
    * ``mutants`` (empty): planted bugs switched on (:mod:`clusterfunk.mutants`); only
      the simulator sets it.
    """

    voters: int = 3
    ack_timeout: float = 0.5
    reshard_delay: float = 0.5
    reshard_max_delay: float = 2.0
    reconcile_interval: float = 0.5
    round_timeout: float = 3.0
    retry_interval: float = 0.1
    quarantine_time: float = 10.0
    unresponsive_after: float = 2.5
    wall_offset: float = 0.0
    lease: float = 1.5
    takeover_wait: float = 3.0
    gain_retry: float = 0.1
    release_wait: float = 1.0
    freeze_watch: bool = True
    mutants: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        if self.voters < 1:
            raise ValueError("voters must be >= 1")
        for name in ("ack_timeout", "reconcile_interval", "round_timeout", "retry_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if not self.lease >= 0:
            raise ValueError("lease must be >= 0")
        if not self.release_wait >= 0:
            raise ValueError("release_wait must be >= 0")


#: The delivery-delay allowance the defaults leave in the left-out bound (case 2):
#: ``unresponsive_after`` 2.5 = heartbeat period 0.5 + lease 1.5 * 1.1 + 0.35.
DELAY_ALLOWANCE = 0.35


def lease_bounds(lease: float, *, heartbeat_period: float, election_timeout: float,
                 max_clock_drift: float) -> tuple[float, float]:
    """The two lease bounds of exclusive ownership (docs/cluster.md, "Why no shard is
    served twice"), as ``(unresponsive_floor, takeover_floor)``. ``heartbeat_period``
    is the longest gap between two heartbeats a member gets
    (:attr:`clusterfunk.raft.config.RaftConfig.member_heartbeat_period`).

    * Left out under the same leader (case 2): a member the leader left out for
      stalled echoes heard its last heartbeat at most ``heartbeat_period`` plus a
      delay after its last echo, so its lease has ended when its shards move if
      ``unresponsive_after`` exceeds ``heartbeat_period + lease * (1 + drift)``, the
      floor; what lies above the floor is the allowance for delivery delay.
    * A new leader (case 3): ``takeover_wait`` must be at least ``election_timeout +
      lease`` (the deposed leader's CheckQuorum, then its followers' leases).
    """
    return (heartbeat_period + lease * (1 + max_clock_drift), election_timeout + lease)


def timing_errors(cfg: CoordinatorConfig, *, heartbeat_period: float,
                  election_timeout: float, max_clock_drift: float) -> list[str]:
    """The lease bounds (:func:`lease_bounds`) that ``cfg`` breaks with these Raft
    timings, one sentence each (empty: none). No lease, no bound; no unresponsive
    rule, no left-out bound."""
    errors: list[str] = []
    if cfg.lease <= 0:
        return errors
    unresponsive_floor, takeover_floor = lease_bounds(
        cfg.lease, heartbeat_period=heartbeat_period, election_timeout=election_timeout,
        max_clock_drift=max_clock_drift)
    if cfg.unresponsive_after > 0 and cfg.unresponsive_after <= unresponsive_floor:
        errors.append(
            f"unresponsive_after ({cfg.unresponsive_after} s) must exceed the heartbeat "
            f"period ({heartbeat_period:g} s) plus lease * (1 + max_clock_drift) "
            f"({cfg.lease * (1 + max_clock_drift):g} s): a member left out for stalled "
            f"echoes could still hold its lease when its shards move")
    if cfg.takeover_wait < takeover_floor:
        errors.append(
            f"takeover_wait ({cfg.takeover_wait} s) must be at least election_timeout + "
            f"lease ({takeover_floor:g} s): a deposed leader's followers "
            f"could still hold their leases when a new leader moves their shards")
    return errors


def fit_timing(cfg: CoordinatorConfig, *, heartbeat_period: float, election_timeout: float,
               max_clock_drift: float) -> CoordinatorConfig:
    """``cfg`` with ``unresponsive_after`` and ``takeover_wait`` raised, where needed, to
    their floors (:func:`lease_bounds`) plus the default margins (:data:`DELAY_ALLOWANCE`,
    :data:`LEASE_MARGIN`); never lowered. For slower Raft timings than the defaults
    (the simulator's ``--election-timeout``); :func:`timing_errors` of the result is
    empty."""
    unresponsive_floor, takeover_floor = lease_bounds(
        cfg.lease, heartbeat_period=heartbeat_period, election_timeout=election_timeout,
        max_clock_drift=max_clock_drift)
    return attrs.evolve(
        cfg,
        unresponsive_after=max(cfg.unresponsive_after,
                               round(unresponsive_floor + DELAY_ALLOWANCE, 6)),
        takeover_wait=max(cfg.takeover_wait, round(takeover_floor + LEASE_MARGIN, 6)),
    )


# -- actions (public events the glue carries out) --------------------------------


@attrs.frozen
class Propose:
    """Append ``commands`` to the Raft log (``round``: the reshard round's entries; a
    refusal then gives the round up)."""

    commands: tuple[bytes, ...]
    round: bool = True


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
    state: NodeState
    role: NodeRole


@attrs.frozen
class ReleaseShards:
    """This node stopped serving ``shards`` (applying the proposal at ``index``, or
    fenced, or stopping): the owner runs its release hook and then reports
    :meth:`CoordinatorCore.released` with the same ``index``; a held ack waits for it."""

    index: int
    shards: frozenset[int]


@attrs.frozen
class Settle:
    """Ask the glue to call :meth:`CoordinatorCore.settle` once its queue is empty (a
    gain waits for the lease or for catching up)."""


@attrs.frozen
class OwnershipChanged:
    """The shards this node serves changed: ``gained`` at the commit of the proposal
    at ``index``, or ``lost`` (released) at ``index``."""

    gained: frozenset[int]
    lost: frozenset[int]
    index: int


#: Upper bounds (seconds) of the reshard duration buckets of
#: :attr:`CoordinatorCounters.reshard_seconds` (a last, unbounded bucket follows).
RESHARD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attrs.frozen
class CoordinatorCounters:
    """What :meth:`CoordinatorCore.counters` reports (monotonic since start; for
    metrics). Durations are on the core's clock.

    * ``maps_committed``: committed maps this node applied (every reshard it saw);
    * ``reshards_led``: reshard rounds this node committed as leader, and their
      durations from the proposal to the applied commit: ``reshard_seconds`` counts
      them per bucket of :data:`RESHARD_BUCKETS` (not cumulative; the last entry is
      the bucket above the last bound), ``reshard_seconds_sum`` their sum;
    * ``ack_timeouts``: rounds that timed out waiting for acks (leader);
    * ``quarantines``: nodes quarantined for a missed ack (one per node and round).
    """

    maps_committed: int
    reshards_led: int
    reshard_seconds: tuple[int, ...]
    reshard_seconds_sum: float
    ack_timeouts: int
    quarantines: int


@attrs.frozen
class ReshardInfo:
    """The last committed map this node applied, and why it changed: the nodes it
    added and removed against the map before it (``first``: no map before it; both
    empty: the same nodes, a new leader's reshard)."""

    index: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    first: bool


Action = Propose | AddNonVoter | AddVoter | RemoveServer | TransferLeadership
MemberAction = AddNonVoter | AddVoter | RemoveServer


@attrs.define
class Round:
    """The leader's reshard in flight (see :class:`Phase`)."""

    term: int
    nodes: tuple[str, ...]
    phase: Phase
    deadline: float
    index: int = 0
    acked: set[str] = attrs.Factory(set)
    started: float = 0.0  # local time the round proposed its map
    applied: float = 0.0  # local time the leader applied its proposal (acking began)
    #: nodes of the committed map left out of the proposal that acked it (released)
    released: set[str] = attrs.Factory(set)


class CoordinatorCore(Outbox):
    """See the module docstring. ``raft`` is None for a gossip-only (nonmember) node."""

    def __init__(
        self,
        node_id: str,
        address: str,
        rng: random.Random,
        *,
        raft: RaftView | None,
        gossip: MembershipView,
        sm: ClusterStateMachine,
        weights: int | Sequence[int] | Sequence[float] = 10_000,
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
        #: last committed map record processed, and a later proposal (if any)
        self.committed: MapRecord | None = None
        self.pending: MapRecord | None = None
        self.last_index = 0  # index of the last log result processed
        self.created: float | None = None
        self.stats: dict[str, int] = {}
        self._maps_committed = 0
        self._reshards_led = 0
        self._reshard_buckets = [0] * (len(RESHARD_BUCKETS) + 1)
        self._reshard_sum = 0.0
        self._ack_timeouts = 0
        self._quarantines = 0
        #: the last committed map applied and what it changed (None before any)
        self.last_reshard: ReshardInfo | None = None
        #: the operator's voter target from the log (None: ``cfg.voters``)
        self.voter_target: int | None = None
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
        #: leader: the last step at which each node was a follower it replicates to
        self._sent: dict[str, float] = {}
        self.unresponsive: set[str] = set()
        self.now = 0.0
        self._won_at = -math.inf
        # shard ownership (docs/cluster.md, "Exclusive shard ownership")
        #: the shards this node serves now, and the map index that gave them
        self.owned: frozenset[int] = frozenset()
        self.owned_index = 0
        #: outstanding ReleaseShards (index -> how many), and the ack that waits for them
        self._releasing: dict[int, int] = {}
        self._ack_held: MapRecord | None = None
        self._gain_wanted = False  # a gain waits for the lease or for catching up
        self._gain_retry_at = math.inf
        self._mine_cache: dict[int, frozenset[int]] = {}
        #: the (committed, pending, owned) objects of the last gain that found nothing
        self._no_gain: tuple[MapRecord, MapRecord | None, frozenset[int]] | None = None
        #: freeze rule: the last tick, and when a freeze was last detected
        self._last_tick = -math.inf
        self._frozen_at = -math.inf

    # ------------------------------------------------------------------ Core

    def start(self, now: float) -> None:
        self.now = now
        self._last_tick = now
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
        self._watch_freeze(now)
        self._fence(now)
        if self._gain_wanted and now >= self._gain_retry_at:
            self._gain_wanted = False
            self._out.events.append(Settle())  # the glue settles once its queue is empty
        if self.role != LEADER:
            return
        r = self.round
        if r is not None and now >= r.deadline:
            if r.phase is Phase.ACKING:
                self._ack_timeout(now, r)
            elif r.phase is Phase.HOLDING:
                self._propose_commit(now, r)
            else:
                self._round_timeout(r)
        if now >= self._reconcile_at:
            self._reconcile_at = now + self.cfg.reconcile_interval
        self._leader_step(now)

    def next_deadline(self) -> float:
        """The earliest of: the freeze rule's next tick, the lease end (while serving)
        and a gain retry, each due even if already past (only on_tick serves them, and
        each clears itself: fenced -> nothing owned; retry -> flag off); and, on the
        leader, the earliest leader timer still in the future (a timer at or before
        the last input's ``now`` has been served by that input). Read after every
        input of the core: written as comparisons, without building lists."""
        due = self._watch_at()
        if self.owned:
            end = self._lease_end()
            if end < due:
                due = end
        if self._gain_wanted and self._gain_retry_at < due:
            due = self._gain_retry_at
        if self.role != LEADER:
            return due
        now = self.now
        times = [self._reconcile_at, self._retry_at]
        times += [until for _i, until in self.quarantined.values()]
        if self.round is not None:
            times.append(self.round.deadline)
        else:
            times += [self._reshard_at, self._change_since + self.cfg.reshard_max_delay,
                      self._backoff_until]
        for t in times:
            if now < t < due:
                due = t
        return due

    def counters(self) -> CoordinatorCounters:
        """A snapshot of this node's counters (read-only; see
        :class:`CoordinatorCounters`)."""
        return CoordinatorCounters(
            maps_committed=self._maps_committed, reshards_led=self._reshards_led,
            reshard_seconds=tuple(self._reshard_buckets),
            reshard_seconds_sum=self._reshard_sum, ack_timeouts=self._ack_timeouts,
            quarantines=self._quarantines,
        )


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
            self._become_leader(now, raft.term)
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

    def applied(self, now: float, result: ClusterResult) -> None:
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
        elif isinstance(result, VotersApplied):
            self.voter_target = result.voters  # the leader step below honours it
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
        self.voter_target = sm.voters
        if sm.committed is not None and (
            self.committed is None or sm.committed.index != self.committed.index
        ):
            self.committed = sm.committed
            self._emit_map("committed", sm.committed)
        if self.owned:  # a restored snapshot may have taken shards away
            want = self._mine(self.committed) if self.committed is not None else frozenset()
            if sm.proposal is not None:
                want &= self._mine(sm.proposal)
            if self.owned - want:
                self._release(self.owned - want, sm.committed.index if sm.committed else 0)
        p = sm.proposal
        if p is not None and (self.pending is None or self.pending.index != p.index):
            self.pending = p
            self._emit_map("proposed", p)
            self._release_lost(p)
            if p.leader != self.id:
                self._ack_or_hold(now, p)
        elif p is None:
            self.pending = None
        self._update_state(now)

    def action_failed(self, now: float, action: Action, error: str) -> None:
        """The glue could not carry out ``action`` (the Raft core refused it)."""
        self.now = now
        self._count(f"action refused: {type(action).__name__}")
        if isinstance(action, Propose) and action.round:
            if self.round is not None and self.round.phase in (Phase.PROPOSED, Phase.COMMITTING):
                self.round = None
                self._backoff_until = now + self.cfg.retry_interval
        elif not isinstance(action, Propose):
            self._member_action_wait = False
            self._retry_at = now + self.cfg.retry_interval

    def set_stopping(self, now: float) -> None:
        """Stopping rule: once the node's owner starts a graceful stop the state is
        ``stopping`` for good, whatever else changes (only ``invalid`` would win)."""
        self.now = now
        self._stopping = True
        self._drop_all(now, "stopping")
        self._update_state(now)

    def request_leave(self, now: float) -> bool:
        """Leave rule (the leaver's side): graceful stop of a Raft member: state
        ``stopping`` and a LeaveRequest to the leader's coordination address, read from
        the leader's gossip tags (call again to resend). Returns True once this node is
        no longer in the Raft configuration it knows."""
        self.set_stopping(now)
        raft = self.raft
        if raft is None or (self.id not in raft.voters and self.id not in raft.nonvoters):
            return True
        leader = raft.leader_id
        if leader is None or leader == self.id:
            return False
        m = self.gossip.member(leader)
        addr = m.tags.get(TAG_COORD) if m is not None else None
        if addr:
            self._out.send(addr, LeaveRequest(self.id), True)
        return False

    def remove_member(self, now: float, node: str) -> bool:
        """Manual removal rule (an operator, on the leader): a leave on ``node``'s
        behalf. The leader removes it from Raft and keeps it out of Raft and the map
        while gossip still reports it alive (a killed node until it is declared
        dead; a node that restarts later rejoins as new). Returns False on a node
        that is not the leader; ``node`` must not be this node (transfer first)."""
        self.now = now
        if node == self.id:
            raise ValueError("the leader cannot remove itself: transfer leadership first")
        if self.role != LEADER:
            return False
        self.leaving.add(node)
        self._leader_step(now)
        return True

    def set_voter_target(self, now: float, voters: int) -> bool:
        """Voter target rule (an operator, on the leader): the target number of Raft
        voters goes into the Raft log (a ``VoterTarget`` entry), so that every node
        applies it and every later leader honours it (:meth:`voters_wanted`); once it
        is applied, the leader promotes (:meth:`_promotion`) or demotes
        (:meth:`_demotion`) one member at a time to reach it. Returns False on a node
        that is not the leader (nothing proposed)."""
        self.now = now
        if type(voters) is not int or voters < 1:
            raise ValueError("voters must be an integer >= 1")
        if self.role != LEADER:
            return False
        self._out.events.append(Propose((wire.encode(VoterTarget(voters)),), round=False))
        return True

    def voters_wanted(self) -> int:
        """The number of voters the leader keeps: the operator's target from the log if
        one was applied, else this node's configured ``voters``."""
        return self.voter_target if self.voter_target is not None else self.cfg.voters

    def _on_leave_request(self, now: float, msg: LeaveRequest) -> None:
        """Leave rule (the leader's side): the leader removes a member that asks to
        leave (like a gossip ``left``), and keeps it out of the map."""
        if self.role != LEADER:
            self._count("leave request while not leader")
            return
        if msg.node != self.id:
            self.leaving.add(msg.node)
            self._leader_step(now)

    # ------------------------------------------------------------------ state

    def _raft_role(self) -> NodeRole:
        """Role rule: no Raft server -> ``nonmember``; Raft leader -> ``leader``; any
        other voter (follower or campaigning) -> ``follower``; a Raft non-voter listed
        as non-voter of its configuration -> ``nonvoter``; else ``unknown`` (removed,
        or not added yet)."""
        raft = self.raft
        if raft is None:
            return NONMEMBER
        r = raft.role
        if r is Role.LEADER:
            return LEADER
        if r.is_voter:
            return FOLLOWER
        return NONVOTER if self.id in raft.nonvoters else UNKNOWN

    def _update_state(self, now: float) -> None:
        """State rule (docs/cluster.md): ``stopping`` overrides; an election in
        progress is ``voting``; a pending proposal (or the leader's round) is
        ``resharding``; being in the committed map is ``operational`` (a gossip-only
        client: having joined gossip); else ``joining``. Emits ``cluster.state`` and
        :class:`StateChanged` when the (state, role) pair changes."""
        role = self._raft_role()
        if self._stopping:
            state = STOPPING
        elif self.raft is not None and self.raft.role.campaigning:
            state = VOTING
        elif self.pending is not None or (role == LEADER and self.round is not None):
            state = RESHARDING
        elif self.raft is None:
            state = OPERATIONAL if self.gossip.joined else JOINING
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
        is committed) and ack it to the proposing leader; the leader acks itself (and
        its round starts collecting acks)."""
        self.pending = rec
        self._emit_map("proposed", rec)
        self._release_lost(rec)
        r = self.round
        if rec.leader == self.id:
            if (
                r is not None and r.phase is Phase.PROPOSED and r.term == rec.term
                and self.role == LEADER and self.raft is not None
                and self.raft.term == rec.term
            ):
                r.phase = Phase.ACKING
                r.index = rec.index
                r.nodes = rec.nodes
                r.deadline = now + self.cfg.ack_timeout
                r.applied = now
                self._ack_or_hold(now, rec)
        else:
            self._ack_or_hold(now, rec)

    def _on_commit(self, now: float, rec: MapRecord) -> None:
        """Apply rule for ShardMapCommitted: the named proposal is now in force."""
        before = self.committed
        self._maps_committed += 1
        before_nodes = set(before.nodes) if before is not None else set()
        rec_nodes = set(rec.nodes)
        self.last_reshard = ReshardInfo(
            rec.index,
            tuple(n for n in rec.nodes if before is None or n not in before_nodes),
            tuple(n for n in before.nodes if n not in rec_nodes) if before else (),
            before is None,
        )
        self.committed = rec
        if self.pending is not None and self.pending.index <= rec.index:
            self.pending = None
        self._emit_map("committed", rec)
        r = self.round
        if r is not None and r.phase is Phase.COMMITTING and r.index == rec.index:
            self.round = None
            self._resharded_term = r.term
            self._observe_reshard(now - r.started)

    def _observe_reshard(self, seconds: float) -> None:
        self._reshards_led += 1
        self._reshard_sum += seconds
        i = 0
        while i < len(RESHARD_BUCKETS) and seconds > RESHARD_BUCKETS[i]:
            i += 1
        self._reshard_buckets[i] += 1

    # ------------------------------------------------------------------ shard ownership

    def released(self, now: float, index: int) -> None:
        """Release-done rule: the owner's release hook for the :class:`ReleaseShards` of
        ``index`` finished (or overran its timeout). Once no release is outstanding,
        the held ack of the pending proposal is sent (the leader counts its own)."""
        self.now = now
        n = self._releasing.get(index, 0)
        if n <= 0:
            self._count("unexpected released")
            return
        if n == 1:
            del self._releasing[index]
        else:
            self._releasing[index] = n - 1
        held = self._ack_held
        if self._releasing or held is None:
            return
        self._ack_held = None
        if self.pending is None or self.pending.index != held.index:
            self._count("held ack of a superseded proposal dropped")
            return
        self._send_ack(now, held)
        if self.role == LEADER:
            self._leader_step(now)

    def serves(self, now: float, shard: int) -> bool:
        """Whether this node serves ``shard`` at ``now`` (owned, and the lease holds:
        a lease that ran out since the last tick already counts)."""
        return shard in self.owned and self._lease_ok(now)

    def settle(self, now: float) -> None:
        """Called by the glue after a pump that processed log results or Raft changes
        (so a batch of results applied in one Raft step -- a restart replaying its log,
        a lagging follower catching up -- is judged by its *last* map, never an
        intermediate one): runs the fencing rule, then the gain rule."""
        self.now = now
        self._fence(now)
        self._gain(now)

    def _release_lost(self, rec: MapRecord) -> None:
        """Release rule: on applying a proposal, stop serving at once every shard this
        node serves that the proposal gives to another node (``shard.release``), and
        ask the owner to finish their work (:class:`ReleaseShards`); the ack of the
        proposal waits for :meth:`released` (:meth:`_ack_or_hold`)."""
        lost = self.owned - self._mine(rec)
        if lost:
            self._release(lost, rec.index)

    def _ack_or_hold(self, now: float, rec: MapRecord) -> None:
        """Ack-after-release rule: a proposal is acked (to the leader's ack address; the
        leader records its own ack) only when no release is outstanding; otherwise
        the ack is held until :meth:`released` (a newer proposal replaces it)."""
        if self._releasing:
            self._ack_held = rec
            self._count("acks held for a release")
            return
        self._ack_held = None
        self._send_ack(now, rec)

    def _send_ack(self, now: float, rec: MapRecord) -> None:
        if rec.leader != self.id:
            self._out.send(rec.ack, Ack(self.id, rec.index), True)
            return
        r = self.round
        if r is not None and r.phase is Phase.ACKING and r.index == rec.index:
            self._record_ack(now, r, self.id)

    def _gain(self, now: float) -> None:
        """Gain rule: start serving the shards the committed map gives this node, except
        those a pending proposal takes away (``shard.acquire``), only when (1) the
        lease holds, (2) the node is not stopping, and (3) it is caught up: its Raft
        commit index reached the highest commit index a leader announced to it since
        it booted, in an AppendEntries of the current term received within ``lease``
        (the leader: it committed in its term), so it has applied every map
        committed before that announcement was sent -- a restarted, partitioned or
        lagging node never serves from a stale map. Run after the glue's pump (never
        between two results of one batch); a gain blocked by (1) or (3) is retried.

        What the maps give is computed once per (committed record, pending record,
        owned set): after a computation that found nothing to gain, the next call
        with the same three objects returns at once (each is replaced, never
        changed, when it changes)."""
        self._gain_wanted = False
        rec = self.committed
        raft = self.raft
        if rec is None or self._stopping or raft is None:
            return
        pending, owned = self.pending, self.owned
        seen = self._no_gain
        if seen is not None and seen[0] is rec and seen[1] is pending and seen[2] is owned:
            return
        want = self._mine(rec)
        if pending is not None:
            want &= self._mine(pending)
        gained = want - owned
        if not gained:
            self._no_gain = (rec, pending, owned)
            return
        heard = raft.leader_commit
        fresh = self.cfg.lease <= 0 or now < raft.leader_commit_at + self.cfg.lease
        if not self._lease_ok(now) or heard is None or not fresh or raft.commit_index < heard:
            self._gain_wanted = True
            self._gain_retry_at = now + self.cfg.gain_retry
            return
        self.owned = self.owned | gained
        self.owned_index = rec.index
        self._out.emit("shard.acquire", index=rec.index, shards=sorted(gained))
        self._out.events.append(OwnershipChanged(frozenset(gained), frozenset(), rec.index))

    def _fence(self, now: float) -> None:
        """Fencing rule (the shard lease): a node whose Raft server has not heard from a
        leader of its term within ``lease`` (the leader: no CheckQuorum success) stops
        serving every shard. It serves again only from the next commit it applies."""
        if self.owned and not self._lease_ok(now):
            self._count("fenced: lease expired or frozen")
            self._drop_all(now, "lease")

    def _drop_all(self, now: float, why: str) -> None:
        if self.owned:
            self._release(self.owned, self.owned_index)

    def _release(self, lost: frozenset[int], index: int) -> None:
        self.owned = self.owned - lost
        self._releasing[index] = self._releasing.get(index, 0) + 1
        self._out.emit("shard.release", index=index, shards=sorted(lost))
        self._out.events.append(OwnershipChanged(frozenset(), frozenset(lost), index))
        self._out.events.append(ReleaseShards(index, frozenset(lost)))

    def _lease_end(self) -> float:
        """Local time the lease ends (inf without a lease or with nothing served)."""
        if not self.owned or self.cfg.lease <= 0 or self.raft is None:
            return math.inf
        return self.raft.leader_contact + self.cfg.lease

    def _lease_ok(self, now: float) -> bool:
        if self.cfg.lease <= 0 or self.raft is None:
            return True
        if self.cfg.freeze_watch and now - self._last_tick > self.cfg.lease * FREEZE_GAP:
            return False  # freeze rule: this node's own tick is overdue
        contact = self.raft.leader_contact
        if contact < self._frozen_at + self.cfg.lease * THAW_GRACE:
            return False  # freeze rule: no leader message received since the thaw
        return now < contact + self.cfg.lease  # same sum as _lease_end

    def _watch_at(self) -> float:
        """When the freeze rule's next tick is due (inf without a lease)."""
        if self.cfg.lease <= 0 or self.raft is None or not self.cfg.freeze_watch:
            return math.inf
        return self._last_tick + self.cfg.lease * FREEZE_TICK

    def _watch_freeze(self, now: float) -> None:
        """Freeze rule: a member ticks every ``lease / 3``; a tick more than
        ``2 * lease / 3`` after the previous one means the process was frozen (SIGSTOP,
        a GC or VM stall; ``sim.pause``). Leader messages that waited in buffers
        meanwhile arrive at the thaw as if fresh, while the leader may have given
        this node's shards away: so the lease fails while the tick is overdue (even
        before this tick runs: :meth:`serves` checks it) and, once it runs, counts
        only leader messages received ``lease / 4`` after the thaw -- the node fences
        (releases everything) and gains again from a fresh AppendEntries, caught up
        (docs/cluster.md)."""
        if self.cfg.lease > 0 and self.raft is not None and self.cfg.freeze_watch and \
                now - self._last_tick > self.cfg.lease * FREEZE_GAP:
            self._frozen_at = now
            self._count("freezes detected")
        self._last_tick = now

    def _mine(self, rec: MapRecord) -> frozenset[int]:
        """The shards ``rec``'s map gives this node (decoded once per index)."""
        got = self._mine_cache.get(rec.index)
        if got is not None:
            return got
        sm = self.sm
        m: ShardMap | None = None
        if sm.proposal is not None and sm.proposal.index == rec.index:
            m = sm.proposed_map()
        elif sm.committed is not None and sm.committed.index == rec.index:
            m = sm.committed_map()
        if m is None:
            m = ShardMap.decode(rec.blob)
        got = frozenset(m.shards_of(self.id))
        if len(self._mine_cache) >= 4:
            del self._mine_cache[min(self._mine_cache)]
        self._mine_cache[rec.index] = got
        return got

    # ------------------------------------------------------------------ leader

    def _become_leader(self, now: float, term: int) -> None:
        """New-leader rule: forget the previous term's round, quarantine, leavers and
        echo times; reconcile at once; reshard ``reshard_delay`` after winning."""
        self.term = term
        self._won_at = now
        self.round = None
        self.quarantined = {}
        self.leaving = set()
        self._echo = {}
        self._sent = {}
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
        raft = self.raft
        if self.role != LEADER or raft is None or raft.role is not Role.LEADER:
            return
        live, gone = self._membership()
        pending_change = self._reconcile(now, raft, live, gone)
        self._check_responsive(now, raft)
        self._maybe_reshard(now, pending_change, gone)
        self._update_state(now)

    def _membership(self) -> tuple[dict[str, MemberInfo], set[str]]:
        """The full gossip member list, read once per leader step (it cannot change
        during one input): the live members (alive or suspect) by name, and the names
        of those declared dead or left."""
        live: dict[str, MemberInfo] = {}
        gone: set[str] = set()
        for m in self.gossip.members():
            if m.status.live:
                live[m.name] = m
            elif m.status.gone:
                gone.add(m.name)
        return live, gone

    def _reconcile(
        self, now: float, raft: RaftView, live: dict[str, MemberInfo], gone: set[str]
    ) -> bool:
        """Membership rule: gossip drives Raft. Compares the full gossip member list
        (``live`` and ``gone``: :meth:`_membership`) with the Raft configuration and
        makes at most one change, the first of :meth:`_removal`, :meth:`_addition`,
        :meth:`_promotion`, :meth:`_demotion`; a change waits while the previous one
        is not committed (at most ``round_timeout``) or after a refusal
        (``retry_interval``). Returns whether a change is still wanted."""
        self._expire_quarantine(now, raft)
        # a leaver stays "leaving" until gossip reports it left (or forgets it): it must
        # not be re-added while its gossip entry still says alive
        self.leaving = {n for n in self.leaving if n in live}
        action: MemberAction | None = self._removal(raft, live, gone)
        if action is None:
            action = self._addition(raft, live)
        if action is None:
            action = self._promotion(raft, live)
        if action is None:
            action = self._demotion(raft)
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

    def _expire_quarantine(self, now: float, raft: RaftView) -> None:
        """Quarantine rule: a quarantined node is tried again after
        ``quarantine_time``, and forgotten once it is no Raft server."""
        voters, nonvoters = raft.voters, raft.nonvoters
        for q, (_i, until) in list(self.quarantined.items()):
            if (q not in voters and q not in nonvoters) or now >= until:
                del self.quarantined[q]

    def _removal(
        self, raft: RaftView, live: dict[str, MemberInfo], gone: set[str]
    ) -> RemoveServer | None:
        """Removal rule: remove a Raft server (voter or non-voter, in configuration
        order, never this one) that gossip reports dead or left -- never one gossip has
        not heard of -- or that asked to leave."""
        for sid in [*raft.voters, *raft.nonvoters]:
            if sid != self.id and ((sid in gone and sid not in live) or sid in self.leaving):
                return RemoveServer(sid)
        return None

    def _addition(
        self, raft: RaftView, live: dict[str, MemberInfo]
    ) -> AddVoter | AddNonVoter | None:
        """Addition rule: the first live member (by name) with an ``ep.raft`` tag that
        is not leaving is added as a non-voter, or its address fixed (a voter's with
        ``AddVoter``, except this node's own)."""
        voters, nonvoters = raft.voters, raft.nonvoters
        for name in sorted(live):
            addr = live[name].tags.get(TAG_RAFT)
            if not addr or name in self.leaving:
                continue
            if name in voters:
                if voters[name] != addr and name != self.id:
                    return AddVoter(name, addr)
            elif nonvoters.get(name) != addr:
                return AddNonVoter(name, addr)
        return None

    def _promotion(self, raft: RaftView, live: dict[str, MemberInfo]) -> AddVoter | None:
        """Promotion rule: while there are fewer voters than wanted
        (:meth:`voters_wanted`), promote the first non-voter (by id) that gossip
        reports alive (not suspect), whose match index reached the commit index, and
        that is not quarantined, leaving or unresponsive."""
        if len(raft.voters) >= self.voters_wanted():
            return None
        commit = raft.commit_index
        for sid, addr in raft.nonvoters.items():
            m = live.get(sid)
            if m is None or m.status is not Status.ALIVE:
                continue
            match = raft.match_index(sid)
            if match is not None and match >= commit and sid not in self.quarantined and \
                    sid not in self.leaving and sid not in self.unresponsive:
                return AddVoter(sid, addr)
        return None

    def _demotion(self, raft: RaftView) -> RemoveServer | None:
        """Demotion rule: while there are more voters than wanted (:meth:`voters_wanted`:
        an operator lowered the target), remove the last voter by id that is not this node; the
        addition rule then adds it back as a non-voter (a voter cannot be demoted in
        one configuration change)."""
        if len(raft.voters) <= self.voters_wanted():
            return None
        others = sorted(v for v in raft.voters if v != self.id)
        return RemoveServer(others[-1]) if others else None

    def _check_responsive(self, now: float, raft: RaftView) -> None:
        """Liveness rule (the leader's fast failure detector, on Raft heartbeats): a
        member whose heartbeat echoes stalled for ``unresponsive_after`` is
        unresponsive until they advance again."""
        for sid in raft.followers():
            self._sent[sid] = now
        horizon = now - self.cfg.reconcile_interval - self.cfg.lease - LEASE_MARGIN
        for sid in [s for s, t in self._sent.items() if t < horizon]:
            del self._sent[sid]  # its lease surely ran out: no hold needs it
        limit = self.cfg.unresponsive_after
        if limit <= 0:
            return
        echo = self._echo
        out: set[str] = set()
        for sid in raft.followers():
            ack = raft.heartbeat_echo(sid)
            if ack is None:
                continue
            seen = echo.get(sid)
            if seen is None or seen[0] != ack:
                echo[sid] = (ack, now)
            elif now - seen[1] >= limit:
                out.add(sid)
        for sid in [s for s in echo if raft.heartbeat_echo(s) is None]:
            del echo[sid]
        self.unresponsive = out

    def _target_nodes(self, raft: RaftView, gone: set[str]) -> tuple[str, ...]:
        """Map-membership rule: the Raft servers minus quarantined ones, those gossip
        reports dead or left (``gone``), leavers and unresponsive ones (the leader
        always stays), sorted."""
        nodes = [
            n for n in [*raft.voters, *raft.nonvoters]
            if n == self.id or (n not in self.quarantined and n not in gone
                                and n not in self.leaving and n not in self.unresponsive)
        ]
        return tuple(sorted(nodes))

    def _maybe_reshard(self, now: float, pending_change: bool, gone: set[str]) -> None:
        """Resharding rule: on a change of the Raft member set (once the reconciler is
        done, or after ``reshard_max_delay``) and once per term ``reshard_delay`` after
        winning the election, propose ``ShardMap.update(sorted nodes)`` of the last
        committed map."""
        if self.round is not None or now < self._reshard_at or now < self._backoff_until:
            return
        assert self.raft is not None
        target = self._target_nodes(self.raft, gone)
        committed = self.sm.committed
        same = committed is not None and committed.nodes == target
        if same and self._stranded_proposal():
            same = False  # supersede it, even with the committed map's own nodes
        if same and self._resharded_term == self.term:
            self._change_since = math.inf
            return
        if self._change_since == math.inf:
            self._change_since = now
        if pending_change and self._resharded_term == self.term and \
                now < self._change_since + self.cfg.reshard_max_delay:
            return
        self._propose_map(now, target)

    def _stranded_proposal(self) -> bool:
        """Stranded-proposal rule: a proposal applied after the committed map and given
        up (its round timed out or its acks did not all come) must be superseded even
        when the target nodes equal the committed map's: nodes released shards when
        they applied it, and they serve them again only at a later commit. (A node the
        leader cannot reach, e.g. one-way, stays quarantined or unresponsive, so the
        target falls back to the committed nodes: without this rule the shards that
        proposal moved stay unserved until the node is reachable again.)"""
        p, committed = self.sm.proposal, self.sm.committed
        return p is not None and (committed is None or p.index > committed.index)

    def _propose_map(self, now: float, target: tuple[str, ...]) -> None:
        """Proposal rule: ``ShardMap.update(target)`` of the last committed map (a new
        map of ``weights`` if none), proposed as one ``ProposedShardMap`` entry (after a
        ``Bootstrap`` entry if :meth:`_bootstrap_entry` says so); the round waits
        ``round_timeout`` for it to apply."""
        base = self.sm.committed_map()
        if base is None:
            base = ShardMap(self.weights)
        new, report = base.update(target)
        blob = new.encode()
        entry = ProposedShardMap(self.id, self.term, self.address, tuple(new.nodes),
                                 report.moved, blob)
        commands = [wire.encode(entry)]
        boot = self._bootstrap_entry(now)
        if boot is not None:
            commands.insert(0, wire.encode(boot))
        self.round = Round(self.term, tuple(new.nodes), Phase.PROPOSED,
                           now + self.cfg.round_timeout, started=now)
        self._change_since = math.inf
        self._out.events.append(Propose(tuple(commands)))

    def _bootstrap_entry(self, now: float) -> Bootstrap | None:
        """Bootstrap rule: while the cluster log has no creation time, the first
        proposal of each term carries a ``Bootstrap`` entry (the local clock plus
        ``wall_offset``) before it; the first one applied sets the creation time."""
        if self.sm.created is not None or self._bootstrap_proposed_term == self.term:
            return None
        self._bootstrap_proposed_term = self.term
        return Bootstrap(now + self.cfg.wall_offset)

    def _on_ack(self, now: float, msg: Ack) -> None:
        """Ack rule: the leader counts acks for its round's proposal index; an ack from a
        quarantined node for a proposal at or after the one it missed lets it back in."""
        if self.role != LEADER:
            self._count("ack while not leader")
            return
        r = self.round
        if r is not None and r.phase is Phase.ACKING and msg.index == r.index \
                and msg.node in r.nodes:
            self._record_ack(now, r, msg.node)
            return
        if r is not None and r.phase in (Phase.ACKING, Phase.HOLDING) and r.index \
                and msg.index >= r.index and msg.node not in r.nodes:
            r.released.add(msg.node)  # a left-out holder stopped serving (its ack)
            if r.phase is Phase.HOLDING and self._hold_until(*self._holds(now, r)) is None:
                self._propose_commit(now, r)
        q = self.quarantined.get(msg.node)
        if q is not None and msg.index >= q[0]:
            del self.quarantined[msg.node]
            self._out.emit("cluster.ack", **{"from": msg.node, "index": msg.index})
            self._leader_step(now)
            return
        self._count("stale ack")

    def _record_ack(self, now: float, r: Round, node: str) -> None:
        """Commit rule: count ``node``'s ack of the round's proposal (once); when every
        node of the proposal acked, propose ``ShardMapCommitted`` naming the proposal
        and its nodes."""
        if node in r.acked:
            return
        r.acked.add(node)
        self._out.emit("cluster.ack", **{"from": node, "index": r.index})
        all_acked = len(r.acked) == len(r.nodes)
        if "shard-commit-before-acks" in self.cfg.mutants:
            # MUTANT: breaks the ack rule (docs/cluster.md, resharding step 3)
            all_acked = len(r.acked) > len(r.nodes) // 2
        if not all_acked:
            return
        takeover, left_out = self._holds(now, r)
        if takeover is not None:
            self._count("commits held for takeover")
        if left_out is not None:
            self._count("commits held for a left-out holder")
        until = self._hold_until(takeover, left_out)
        if until is not None:
            r.phase = Phase.HOLDING
            r.deadline = until
            return
        self._propose_commit(now, r)

    def _holds(self, now: float, r: Round) -> tuple[float | None, float | None]:
        """Until when the takeover and the left-out holder rules hold a fully acked
        round's commit (None: that rule does not hold it)."""
        committed = self.committed
        if committed is None:
            return None, None
        left_out = set(committed.nodes) - set(r.nodes)
        if not left_out:
            return None, None
        return self._takeover_hold(now), self._left_out_hold(now, r, left_out)

    @staticmethod
    def _hold_until(*times: float | None) -> float | None:
        """The latest of the holds' times (None: no hold, commit now)."""
        held = [t for t in times if t is not None]
        return max(held) if held else None

    def _takeover_hold(self, now: float) -> float | None:
        """Takeover rule: a commit that takes shards from nodes that did not ack (nodes
        of the committed map left out of the proposal) waits until ``takeover_wait``
        after this leader won: by then a deposed leader has stepped down (CheckQuorum)
        and the leases its heartbeats gave its followers have run out (docs/cluster.md).
        Returns the time it holds until (None: no hold)."""
        until = self._won_at + self.cfg.takeover_wait
        return None if now >= until else until

    def _left_out_hold(self, now: float, r: Round, left_out: set[str]) -> float | None:
        """Left-out holder rule: a node of the committed map left out of the proposal
        (dead in gossip, quarantined, unresponsive, leaving) that has not acked it may
        still hold its lease, and so still serve:

        * a follower the leader heard within ``lease`` hears the leader: it stops
          serving when it applies the proposal and then acks it; the commit waits for
          that ack, at most ``release_wait`` after the leader applied the proposal;
        * a node no longer replicated to (removed from Raft: it never gets the
          proposal) heard the leader last about when the leader last replicated to
          it; the commit waits until its lease has surely run out: that time plus
          ``reconcile_interval`` (the leader notes it once per step) plus ``lease``
          plus :data:`LEASE_MARGIN` for drift and delay (docs/cluster.md).

        A follower not heard within ``lease`` is cut off both ways (its lease ran
        out) or hears the leader one-way and applies the proposal a round trip before
        the commit. Returns the time the commit holds until (None: no hold)."""
        followers = set(self.raft.followers()) if self.raft is not None else set()
        until: list[float] = []
        for n in sorted(left_out - r.released):
            if n in followers:
                seen = self._echo.get(n)
                if seen is not None and now - seen[1] < self.cfg.lease:
                    until.append(r.applied + self.cfg.release_wait)
            elif n in self._sent:
                until.append(self._sent[n] + self.cfg.reconcile_interval + self.cfg.lease
                             + LEASE_MARGIN)
        t = max(until, default=0.0)
        return None if t <= now else t

    def _propose_commit(self, now: float, r: Round) -> None:
        r.phase = Phase.COMMITTING
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
        self._ack_timeouts += 1
        self._quarantines += len(missing)
        if r.acked == {self.id} and len(r.nodes) > 1:
            # nobody else could ack: hand leadership to a voter that may do better; if
            # that is refused (no other voter) the next round goes on without them
            self._count("nobody acked")
            self._backoff_until = now + self.cfg.round_timeout
            self._out.events.append(TransferLeadership())

    def _round_timeout(self, r: Round) -> None:
        """Round timeout rule: a proposal or commit entry not applied within
        ``round_timeout`` is given up; the next leader step starts a new round."""
        self._count(f"round timeout ({r.phase})")
        self.round = None
