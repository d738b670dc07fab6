"""Every rule of the coordinator, scripted against fake Raft and membership views.

Each test drives a :class:`CoordinatorCore` through its inputs with a
:class:`FakeRaft` (a :class:`~clusterfunk.cluster.views.RaftView`) and a
:class:`FakeMembership` (a :class:`~clusterfunk.cluster.views.MembershipView`),
feeds the leader's proposals back through a real :class:`ClusterStateMachine` as a
Raft log would, and asserts the outputs: actions, messages, trace records and
state changes. Times are the core's local clock, in seconds.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import pytest

from clusterfunk import wire
from clusterfunk.cluster.coordinator import (
    TAG_COORD,
    TAG_MANAGEMENT,
    TAG_RAFT,
    AddNonVoter,
    AddVoter,
    CoordinatorConfig,
    CoordinatorCore,
    NodeRole,
    NodeState,
    Propose,
    RemoveServer,
    StateChanged,
    TransferLeadership,
)
from clusterfunk.cluster.messages import (
    Ack,
    Bootstrap,
    LeaveRequest,
    ProposedShardMap,
    ShardMapCommitted,
)
from clusterfunk.cluster.statemachine import ClusterStateMachine
from clusterfunk.cluster.views import MemberInfo, MembershipView, RaftView
from clusterfunk.gossip.messages import Status
from clusterfunk.raft.roles import Role
from clusterfunk.runtime.api import Output
from clusterfunk.sharding import ShardMap

ME = "n1"


# -- fakes --------------------------------------------------------------------------


@attrs.define
class FakeRaft:
    """A scripted Raft server. ``match`` / ``echo`` stand for the leader's progress:
    the followers are the keys of ``match``."""

    role: Role = Role.FOLLOWER
    term: int = 1
    leader_id: str | None = None
    commit_index: int = 0
    voters: dict[str, str] = attrs.Factory(dict)
    nonvoters: dict[str, str] = attrs.Factory(dict)
    match: dict[str, int] = attrs.Factory(dict)
    echo: dict[str, int] = attrs.Factory(dict)
    leader_contact: float = math.inf  # the shard lease never expires unless a test says so
    leader_commit: int | None = None
    leader_commit_at: float = -math.inf

    def followers(self) -> list[str]:
        return sorted(self.match)

    def match_index(self, server: str) -> int | None:
        return self.match.get(server)

    def heartbeat_echo(self, server: str) -> int | None:
        return self.echo.get(server, 0) if server in self.match else None


@attrs.define
class FakeMembership:
    joined: bool = True
    by_name: dict[str, MemberInfo] = attrs.Factory(dict)

    def set(self, name: str, status: Status = Status.ALIVE, *, raft: bool = True,
            raft_addr: str | None = None) -> None:
        # the management API tag names another port: acks and leaves use TAG_COORD
        tags = {TAG_COORD: f"{name}:8400", TAG_MANAGEMENT: f"{name}:8500"}
        if raft:
            tags[TAG_RAFT] = raft_addr or f"{name}:8300"
        self.by_name[name] = MemberInfo(name, status, tags)

    def member(self, name: str) -> MemberInfo | None:
        return self.by_name.get(name)

    def members(self) -> list[MemberInfo]:
        return [self.by_name[n] for n in sorted(self.by_name)]


def _check_protocols(r: FakeRaft, g: FakeMembership) -> tuple[RaftView, MembershipView]:
    return r, g  # mypy: the fakes implement the views


def raft_addr(n: str) -> str:
    return f"{n}:8300"


class Node:
    """One coordinator over fakes, plus the log its leader's proposals go to."""

    def __init__(
        self,
        voters: tuple[str, ...] = ("n1", "n2", "n3"),
        nonvoters: tuple[str, ...] = (),
        members: tuple[str, ...] | None = None,
        me: str = ME,
        raft: bool = True,
        **cfg: Any,
    ) -> None:
        self.raft = FakeRaft(
            role=Role.FOLLOWER if me in voters else Role.NONVOTER,
            voters={v: raft_addr(v) for v in voters},
            nonvoters={v: raft_addr(v) for v in nonvoters},
        ) if raft else None
        self.gossip = FakeMembership()
        for n in members if members is not None else (*voters, *nonvoters):
            self.gossip.set(n)
        self.sm = ClusterStateMachine()
        # these fakes jump in time without the driver's ticks: the freeze rule (which
        # would read each jump as a freeze) has its own tests in test_ownership_rules
        cfg.setdefault("freeze_watch", False)
        self.cfg = CoordinatorConfig(**cfg)
        self.core = CoordinatorCore(
            me, f"{me}:8400", random.Random(1), raft=self.raft, gossip=self.gossip,
            sm=self.sm, weights=100, config=self.cfg,
        )
        self.me = me
        self.index = 1  # last Raft log index (1: the configuration entry)
        self.core.start(0.0)

    # -- driving ---------------------------------------------------------------------

    def out(self) -> Output:
        return self.core.drain() or Output()

    def win(self, now: float, term: int = 1, **match: int) -> Output:
        """This node wins the election of ``term``; its followers' match indexes are
        the commit index unless given."""
        r = self.raft
        assert r is not None
        r.role, r.term, r.leader_id = Role.LEADER, term, self.me
        r.match = {s: match.get(s, r.commit_index)
                   for s in [*r.voters, *r.nonvoters] if s != self.me}
        r.echo = {s: 0 for s in r.match}
        self.core.raft_changed(now)
        return self.out()

    def beat(self, *servers: str) -> None:
        """Heartbeat echoes of ``servers`` (default: every follower) advance."""
        assert self.raft is not None
        for s in servers or tuple(self.raft.match):
            self.raft.echo[s] = self.raft.echo.get(s, 0) + 1

    def apply(self, now: float, commands: tuple[bytes, ...]) -> Output:
        """The log applies ``commands`` (in order) on this node."""
        for cmd in commands:
            self.index += 1
            if self.raft is not None:
                self.raft.commit_index = self.index
            self.core.applied(now, self.sm.apply(self.index, cmd))
        return self.out()

    def set_config(self, now: float, voters: tuple[str, ...],
                   nonvoters: tuple[str, ...] = ()) -> Output:
        """A configuration entry committed."""
        r = self.raft
        assert r is not None
        self.index += 1
        r.commit_index = self.index
        r.voters = {v: raft_addr(v) for v in voters}
        r.nonvoters = {v: raft_addr(v) for v in nonvoters}
        if r.role is Role.LEADER:
            r.match = {s: r.match.get(s, 0) for s in [*voters, *nonvoters] if s != self.me}
        self.core.raft_changed(now, config_committed=True)
        return self.out()

    def ack(self, now: float, node: str, index: int) -> Output:
        self.core.on_message(now, f"{node}:8400", Ack(node, index), True)
        return self.out()

    def tick(self, now: float) -> Output:
        self.core.on_tick(now)
        return self.out()

    def committed_round(self, start: float = 0.0) -> float:
        """Win, propose at ``reshard_delay``, apply, every node acks, commit applied.
        Returns the time the commit was applied."""
        self.win(start)
        t = start + self.cfg.reshard_delay
        prop = proposes(self.tick(t))[0]
        out = self.apply(t, prop.commands)
        index = self.index
        for n in entries(prop, ProposedShardMap)[0].nodes:
            if n != self.me:
                out = self.ack(t + 0.01, n, index)
        commit = proposes(out)[0]
        self.apply(t + 0.02, commit.commands)
        assert self.core.state == NodeState.OPERATIONAL
        return t + 0.02


# -- output helpers -------------------------------------------------------------------


def actions(out: Output) -> list[Any]:
    return [e for e in out.events if not isinstance(e, StateChanged)]


def proposes(out: Output) -> list[Propose]:
    return [e for e in out.events if isinstance(e, Propose)]


def entries(p: Propose, kind: type | None = None) -> list[Any]:
    decoded = [wire.decode(c) for c in p.commands]
    return [e for e in decoded if kind is None or isinstance(e, kind)]


def traces(out: Output, ev: str) -> list[dict[str, Any]]:
    return [fields for name, fields in out.trace if name == ev]


def proposed_nodes(out: Output) -> tuple[str, ...]:
    (p,) = proposes(out)
    (entry,) = entries(p, ProposedShardMap)
    return entry.nodes


# -- state and role derivation --------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "in_nonvoters", "want_state", "want_role"),
    [
        (Role.FOLLOWER, False, NodeState.JOINING, NodeRole.FOLLOWER),
        (Role.PRECANDIDATE, False, NodeState.VOTING, NodeRole.FOLLOWER),
        (Role.CANDIDATE, False, NodeState.VOTING, NodeRole.FOLLOWER),
        (Role.LEADER, False, NodeState.JOINING, NodeRole.LEADER),
        (Role.NONVOTER, True, NodeState.JOINING, NodeRole.NONVOTER),
        (Role.NONVOTER, False, NodeState.JOINING, NodeRole.UNKNOWN),
    ],
)
def test_role_and_state_rule_from_the_raft_role(role, in_nonvoters, want_state, want_role):
    """Role rule / state rule: the Raft role maps to the cluster role; campaigning is
    ``voting``; a member outside a committed map is ``joining``; each change is traced
    once and published as StateChanged."""
    node = Node(voters=("n2",), nonvoters=(ME,) if in_nonvoters else ())
    initial = NodeRole.NONVOTER if in_nonvoters else NodeRole.UNKNOWN
    assert traces(node.out(), "cluster.state") == [{"state": "joining", "role": initial}]
    assert node.raft is not None
    node.raft.role = role
    node.core.raft_changed(1.0)
    out = node.out()
    assert (node.core.state, node.core.role) == (want_state, want_role)
    changed = (want_state, want_role) != (NodeState.JOINING, initial)
    want = [StateChanged(want_state, want_role)] if changed else []
    assert [e for e in out.events if isinstance(e, StateChanged)] == want
    assert traces(out, "cluster.state") == [{"state": e.state, "role": e.role} for e in want]
    node.core.raft_changed(1.2)  # nothing changed: nothing traced
    assert traces(node.out(), "cluster.state") == []


def test_state_rule_gossip_only_client_is_operational_once_joined():
    """State rule, nonmember: no Raft server -> role ``nonmember``; ``operational`` as
    soon as gossip has joined, ``joining`` before."""
    node = Node(raft=False)
    node.gossip.joined = False
    node.core.members_changed(0.0)
    assert (node.core.state, node.core.role) == (NodeState.JOINING, NodeRole.NONMEMBER)
    node.gossip.joined = True
    node.core.members_changed(1.0)
    assert traces(node.out(), "cluster.state")[-1] == {"state": "operational",
                                                       "role": "nonmember"}


def test_state_rule_resharding_while_a_proposal_is_pending_then_operational():
    """State rule / apply rules on a follower: a proposal it applied makes it
    ``resharding`` and it acks the proposing leader (stream); the commit makes it
    ``operational`` if it is in the map, ``joining`` if not."""
    node = Node(me="n2")
    assert node.raft is not None
    node.raft.leader_id = "n1"
    m, report = ShardMap(100).update(["n1", "n2"])
    prop = ProposedShardMap("n1", 1, "n1:8400", ("n1", "n2"), report.moved, m.encode())
    out = node.apply(1.0, (wire.encode(prop),))
    index = node.index
    assert node.core.state == NodeState.RESHARDING
    assert [(s.dest, s.msg, s.stream) for s in out.sends] == \
        [("n1:8400", Ack("n2", index), True)]
    assert traces(out, "cluster.shardmap")[0]["phase"] == "proposed"
    assert node.core.committed is None  # a proposal is never in force
    out = node.apply(1.1, (wire.encode(ShardMapCommitted(index, ("n1", "n2"))),))
    assert node.core.state == NodeState.OPERATIONAL
    assert node.core.committed is not None and node.core.committed.index == index
    assert traces(out, "cluster.shardmap")[0]["phase"] == "committed"
    # a map without this node: joining
    m2, report = m.update(["n1"])
    prop2 = ProposedShardMap("n1", 1, "n1:8400", ("n1",), report.moved, m2.encode())
    node.apply(2.0, (wire.encode(prop2),))
    node.apply(2.1, (wire.encode(ShardMapCommitted(node.index, ("n1",))),))
    assert node.core.state == NodeState.JOINING


def test_stopping_rule_overrides_every_other_state():
    """Stopping rule: after set_stopping the state is ``stopping`` whatever happens."""
    node = Node()
    node.committed_round()
    node.core.set_stopping(1.0)
    out = node.out()
    assert traces(out, "cluster.state") == [{"state": "stopping", "role": "leader"}]
    assert node.raft is not None
    node.raft.role = Role.CANDIDATE  # an election would be "voting"
    node.core.raft_changed(1.1)
    assert node.core.state == NodeState.STOPPING
    assert traces(node.out(), "cluster.state") == [{"state": "stopping", "role": "follower"}]


# -- bootstrap and proposals ---------------------------------------------------------


def test_bootstrap_rule_first_proposal_of_each_term_until_the_cluster_has_a_creation_time():
    """Bootstrap rule: with no creation time in the log the first proposal of a term
    carries a Bootstrap entry (local clock + wall_offset) first; a second proposal in
    that term does not; once a Bootstrap is applied, no proposal carries one."""
    node = Node(wall_offset=1000.0)
    node.win(0.0)
    assert proposes(node.tick(0.4)) == []  # reshard_delay (0.5) after winning
    (p,) = proposes(node.tick(0.5))
    assert [type(e) for e in entries(p)] == [Bootstrap, ProposedShardMap]
    assert entries(p, Bootstrap) == [Bootstrap(1000.5)]
    # the round is lost (never applied): the retry in the same term has no Bootstrap
    (p2,) = proposes(node.tick(3.5))
    assert [type(e) for e in entries(p2)] == [ProposedShardMap]
    assert node.core.stats["round timeout (proposed)"] == 1
    # a new term: Bootstrap again (the log still has no creation time)
    node.win(4.0, term=2)
    (p3,) = proposes(node.tick(4.5))
    assert [type(e) for e in entries(p3)] == [Bootstrap, ProposedShardMap]
    node.apply(4.5, p3.commands)
    assert node.core.created == 1004.5
    # created: a later term's proposal has none
    node.win(10.0, term=3)
    node.beat()
    (p4,) = proposes(node.tick(10.5))
    assert [type(e) for e in entries(p4)] == [ProposedShardMap]


def test_proposal_rule_new_leader_reshards_once_after_reshard_delay():
    """Resharding rule / proposal rule: reshard_delay after winning, the leader proposes
    ShardMap.update(sorted nodes) of the last committed map (a new map of the
    weights without one), and it is ``resharding`` until the round commits."""
    node = Node(voters=("n1", "n3", "n2"))
    out = node.win(0.0)
    assert proposes(out) == []
    assert node.core.next_deadline() == 0.5
    out = node.tick(0.5)
    assert proposed_nodes(out) == ("n1", "n2", "n3")
    (entry,) = entries(proposes(out)[0], ProposedShardMap)
    want, report = ShardMap(100).update(["n1", "n2", "n3"])
    assert (entry.leader, entry.term, entry.ack) == ("n1", 1, "n1:8400")
    assert entry.blob == want.encode() and entry.moved == report.moved
    assert node.core.state == NodeState.RESHARDING
    # while the round is in flight no second proposal is made
    assert proposes(node.tick(0.6)) == []


def test_proposal_rule_waits_for_the_reconciler_then_proposes_the_new_member_set():
    """Resharding rule: a member-set change waits while the reconciler still has a
    change to make (here: removing a dead server), at most reshard_max_delay."""
    node = Node()
    t = node.committed_round()
    node.gossip.set("n3", Status.DEAD)
    node.beat()
    node.core.members_changed(t + 0.1)
    out = node.out()
    assert actions(out) == [RemoveServer("n3")]
    assert proposes(node.tick(t + 0.5)) == []  # the removal is not committed yet
    node.beat()
    out = node.tick(t + 0.1 + 2.0)  # reshard_max_delay reached: propose anyway
    assert proposed_nodes(out) == ("n1", "n2")


# -- acks and commit -----------------------------------------------------------------


def test_ack_rule_counts_acks_of_the_round_only():
    """Ack rule: the leader counts each node's ack of its round's proposal once (its
    own on applying it), traced as cluster.ack; acks of another index, from a node
    outside the proposal, or to a non-leader are dropped and counted."""
    node = Node()
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    out = node.apply(0.5, p.commands)
    index = node.index
    assert traces(out, "cluster.ack") == [{"from": "n1", "index": index}]
    out = node.ack(0.6, "n2", index)
    assert traces(out, "cluster.ack") == [{"from": "n2", "index": index}]
    assert traces(node.ack(0.6, "n2", index), "cluster.ack") == []  # duplicate
    node.ack(0.6, "n3", index - 1)  # another proposal
    node.ack(0.6, "n9", index)  # not in the proposal
    assert node.core.stats["stale ack"] == 2
    assert node.core.round is not None and node.core.round.acked == {"n1", "n2"}
    follower = Node(me="n2")
    follower.ack(0.6, "n3", index)
    assert follower.core.stats["ack while not leader"] == 1


def test_commit_rule_commit_only_after_every_node_of_the_proposal_acked():
    """Commit rule: ShardMapCommitted(index, nodes) is proposed exactly when the last
    node of the proposal acked; applying it puts the map in force and ends the round."""
    node = Node(voters=("n1", "n2", "n3"), nonvoters=("n4", "n5"))
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.apply(0.5, p.commands)
    index = node.index
    nodes = ("n1", "n2", "n3", "n4", "n5")
    for n in ("n2", "n3", "n4"):
        assert proposes(node.ack(0.6, n, index)) == []
    (c,) = proposes(node.ack(0.7, "n5", index))
    assert entries(c) == [ShardMapCommitted(index, nodes)]
    out = node.apply(0.8, c.commands)
    assert node.core.round is None
    assert node.core.committed is not None and node.core.committed.nodes == nodes
    assert traces(out, "cluster.shardmap")[0]["phase"] == "committed"
    assert node.core.state == NodeState.OPERATIONAL
    assert proposes(node.tick(1.0)) == []  # same member set: nothing to do


# -- timeouts and quarantine ---------------------------------------------------------


def test_ack_timeout_rule_quarantines_non_ackers_and_proposes_without_them_at_once():
    """Ack timeout rule: ack_timeout after the proposal applied, nodes that did not ack
    are quarantined and a proposal without them is made in the same step; quarantine
    ends after quarantine_time (the node is in the next map again)."""
    node = Node(unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.apply(0.5, p.commands)
    index = node.index
    node.ack(0.6, "n2", index)
    assert proposes(node.tick(0.99)) == []
    out = node.tick(1.0)  # 0.5 + ack_timeout
    assert node.core.quarantined == {"n3": (index, 11.0)}
    assert node.core.stats["ack timeouts"] == 1
    assert proposed_nodes(out) == ("n1", "n2")
    assert TransferLeadership() not in out.events
    # that round commits without n3
    (p2,) = proposes(out)
    node.apply(1.0, p2.commands)
    (c,) = proposes(node.ack(1.1, "n2", node.index))
    node.apply(1.2, c.commands)
    assert proposes(node.tick(5.0)) == []
    # quarantine_time later n3 is tried again
    assert proposes(node.tick(10.99)) == [] and node.core.quarantined
    out = node.tick(11.0)
    assert node.core.quarantined == {}
    assert proposed_nodes(out) == ("n1", "n2", "n3")


def test_ack_rule_a_quarantined_node_that_acks_a_later_proposal_is_let_back_in():
    """Ack rule: an ack from a quarantined node for a proposal at or after the one it
    missed ends its quarantine at once (traced) and the next map includes it."""
    node = Node(unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.apply(0.5, p.commands)
    missed = node.index
    node.ack(0.6, "n2", missed)
    (p2,) = proposes(node.tick(1.0))  # n3 quarantined
    node.apply(1.0, p2.commands)
    later = node.index
    out = node.ack(1.05, "n3", missed - 1)  # an older proposal: still quarantined
    assert node.core.quarantined and traces(out, "cluster.ack") == []
    out = node.ack(1.05, "n3", later)  # n3 applied the proposal without it
    assert node.core.quarantined == {}
    assert traces(out, "cluster.ack") == [{"from": "n3", "index": later}]
    (c,) = proposes(node.ack(1.1, "n2", later))
    out = node.apply(1.2, c.commands)
    assert proposed_nodes(out) == ("n1", "n2", "n3")  # a reshard lets it back in


def test_ack_timeout_rule_nobody_but_the_leader_acked_hands_leadership_over():
    """Ack timeout rule: if nobody but the leader acked a round of several nodes, the
    leader asks for a leadership transfer and backs off round_timeout before the
    next round (which goes on without them if the transfer was refused)."""
    node = Node(unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.apply(0.5, p.commands)
    out = node.tick(1.0)
    assert actions(out) == [TransferLeadership()]
    assert node.core.stats["nobody acked"] == 1
    assert proposes(node.tick(2.0)) == []  # backoff: round_timeout (3 s)
    node.core.action_failed(2.5, TransferLeadership(), "NotLeader: no other voter")
    out = node.tick(4.0)
    assert proposed_nodes(out) == ("n1",)


def test_round_timeout_rule_a_proposal_never_applied_is_given_up():
    """Round timeout rule: a proposal (or commit) entry not applied within
    round_timeout is given up and the round starts again."""
    node = Node(unresponsive_after=0)
    node.win(0.0)
    assert proposes(node.tick(0.5))
    assert proposes(node.tick(3.49)) == []
    out = node.tick(3.5)
    assert node.core.stats == {"round timeout (proposed)": 1}
    assert proposed_nodes(out) == ("n1", "n2", "n3")


def test_a_refused_proposal_backs_off_retry_interval():
    """Action refusal: a Propose the Raft core refused ends the round; the next one
    comes retry_interval later."""
    node = Node(unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.core.action_failed(0.5, p, "NotLeader")
    assert node.core.round is None
    assert proposes(node.tick(0.55)) == []
    assert proposes(node.tick(0.6))


# -- membership reconciliation -------------------------------------------------------


def test_removal_rule_removes_dead_and_left_servers_never_itself_or_unknown_ones():
    """Removal rule: a Raft server gossip reports dead or left is removed (voters
    first, in configuration order); never this node, never one gossip does not know."""
    node = Node(voters=("n1", "n2", "n3"), nonvoters=("n4", "n5"),
                members=("n1", "n2", "n3", "n4"))  # n5: unknown to gossip
    node.committed_round()
    assert actions(node.tick(1.0)) == []  # n5 unknown: kept
    node.gossip.set("n4", Status.LEFT)
    node.gossip.set("n1", Status.DEAD)  # this node: never removed by itself
    node.core.members_changed(1.1)
    assert actions(node.out()) == [RemoveServer("n4")]
    node.set_config(1.2, ("n1", "n2", "n3"), ("n5",))
    node.gossip.set("n3", Status.DEAD)
    node.core.members_changed(1.3)
    assert actions(node.out()) == [RemoveServer("n3")]


def test_addition_rule_adds_live_raft_members_as_nonvoters_and_fixes_addresses():
    """Addition rule: a live member with an ep.raft tag that is not a Raft server is
    added as a non-voter (first by name); a member without the tag never is; a
    voter whose address changed is re-added as voter with the new one."""
    node = Node(members=("n1", "n2", "n3"))
    node.committed_round()
    node.gossip.set("n0", raft=False)  # gossip-only client (first by name)
    node.gossip.set("n5")
    node.gossip.set("n4", Status.SUSPECT)  # suspect is still live
    node.core.members_changed(1.0)
    assert actions(node.out()) == [AddNonVoter("n4", "n4:8300")]
    out = node.set_config(1.1, ("n1", "n2", "n3"), ("n4",))
    assert actions(out)[0] == AddNonVoter("n5", "n5:8300")  # the next change at once
    node.set_config(1.3, ("n1", "n2", "n3"), ("n4", "n5"))
    node.gossip.set("n2", raft_addr="10.0.0.2:8300")
    node.core.members_changed(1.4)
    assert actions(node.out()) == [AddVoter("n2", "10.0.0.2:8300")]


def test_reconcile_rule_one_membership_change_at_a_time():
    """Membership rule: after an action, no other one until a configuration entry
    commits (or round_timeout passes); a refused one is retried after
    retry_interval."""
    node = Node(members=("n1", "n2", "n3"))
    node.committed_round()
    node.gossip.set("n4")
    node.gossip.set("n5")
    node.core.members_changed(1.0)
    assert actions(node.out()) == [AddNonVoter("n4", "n4:8300")]
    node.beat()
    node.core.members_changed(1.1)
    assert actions(node.out()) == []  # waiting for the configuration to commit
    node.core.action_failed(1.2, AddNonVoter("n4", "n4:8300"), "NotLeader")
    node.core.members_changed(1.25)
    assert actions(node.out()) == []  # retry_interval (0.1)
    node.core.members_changed(1.3)
    assert actions(node.out()) == [AddNonVoter("n4", "n4:8300")]
    out = node.set_config(1.4, ("n1", "n2", "n3"), ("n4",))  # committed: next change
    assert actions(out) == [AddNonVoter("n5", "n5:8300")]
    node.beat()
    out = node.tick(1.4 + 3.0)  # never committed: given up after round_timeout
    assert AddNonVoter("n5", "n5:8300") in actions(out)


def test_promotion_rule_promotes_a_caught_up_alive_nonvoter_while_voters_are_missing():
    """Promotion rule: with fewer voters than ``voters``, the first non-voter (by id)
    that is alive (not suspect), caught up (match >= commit) and not quarantined,
    leaving or unresponsive becomes a voter; none once the target is reached."""
    node = Node(voters=("n1", "n2"), nonvoters=("n3", "n4", "n5", "n6"))
    r = node.raft
    assert r is not None
    r.commit_index = 7
    node.gossip.set("n3", Status.SUSPECT)
    out = node.win(0.0, n4=6)  # n4 is behind
    assert actions(out) == [AddVoter("n5", "n5:8300")]
    node.core.action_failed(0.0, AddVoter("n5", "n5:8300"), "refused")
    node.core.quarantined["n5"] = (1, 100.0)
    node.core.members_changed(0.1)
    assert actions(node.out()) == [AddVoter("n6", "n6:8300")]
    r.match["n4"] = 7
    out = node.set_config(0.2, ("n1", "n2", "n6"), ("n3", "n4", "n5"))
    assert [a for a in actions(out) if isinstance(a, AddVoter)] == []  # three voters


def test_promotion_rule_skips_unresponsive_nonvoters():
    node = Node(voters=("n1", "n2"), nonvoters=("n3",), unresponsive_after=2.0)
    node.committed_round()
    r = node.raft
    assert r is not None
    r.match["n3"] = r.commit_index
    node.beat("n2")
    node.tick(2.0)  # n3's echoes stalled since 0.0
    assert node.core.unresponsive == {"n3"}
    node.core.members_changed(2.1)
    assert [a for a in actions(node.out()) if isinstance(a, AddVoter)] == []


# -- fast failure detection ----------------------------------------------------------


def test_liveness_rule_stalled_heartbeat_echoes_leave_the_map_until_they_advance():
    """Liveness rule: a member whose heartbeat echoes have not advanced for
    unresponsive_after (here 2 s) is left out of the next map although gossip still
    says alive; it is back in as soon as its echoes advance."""
    # (the takeover rule is tested in test_ownership_rules)
    node = Node(takeover_wait=0.0, unresponsive_after=2.0)
    t = node.committed_round()  # echoes of n2 and n3 first seen at 0.0
    node.beat("n2")
    assert proposes(node.tick(1.9)) == []
    out = node.tick(2.0)
    assert node.core.unresponsive == {"n3"}
    assert proposed_nodes(out) == ("n1", "n2")
    assert node.gossip.member("n3") is not None  # still alive in gossip
    (p,) = proposes(out)
    node.apply(2.0, p.commands)
    (c,) = proposes(node.ack(2.05, "n2", node.index))
    node.apply(2.1, c.commands)
    node.beat("n3")
    out = node.tick(2.5)
    assert node.core.unresponsive == set()
    assert proposed_nodes(out) == ("n1", "n2", "n3")
    assert t < 2.0


def test_liveness_rule_can_be_disabled():
    node = Node(unresponsive_after=0)
    node.committed_round()
    assert proposes(node.tick(10.0)) == []
    assert node.core.unresponsive == set()


# -- leaving -------------------------------------------------------------------------


def test_leave_rule_leader_removes_a_member_that_asks_and_keeps_it_out_of_the_map():
    """Leave rule (leader): a LeaveRequest makes the leader remove that server and
    leave it out of the next map, while gossip still reports it alive; it is not
    re-added as long as gossip says alive. A non-leader ignores the request."""
    node = Node(voters=("n1", "n2", "n3"), nonvoters=("n4",))
    node.committed_round()
    node.beat()
    node.core.on_message(1.0, "n4:8400", LeaveRequest("n4"), True)
    out = node.out()
    assert actions(out) == [RemoveServer("n4")]
    assert node.core.leaving == {"n4"}
    out = node.set_config(1.1, ("n1", "n2", "n3"))
    assert [a for a in actions(out) if isinstance(a, AddNonVoter)] == []  # not re-added
    assert proposed_nodes(out) == ("n1", "n2", "n3")
    node.gossip.set("n4", Status.LEFT)
    node.core.members_changed(1.2)
    assert node.core.leaving == set()
    follower = Node(me="n2")
    follower.core.on_message(1.0, "n4:8400", LeaveRequest("n4"), True)
    assert follower.core.stats == {"leave request while not leader": 1}
    assert actions(follower.out()) == []


def test_leave_rule_leaver_asks_the_leader_until_it_is_out_of_the_configuration():
    """Leave rule (leaver): request_leave sets ``stopping`` and sends a LeaveRequest to
    the leader's coordination address (its gossip tag) on every call; it returns
    True once this node is no server of the configuration it knows."""
    node = Node(me="n2")
    r = node.raft
    assert r is not None
    r.leader_id = None
    assert node.core.request_leave(1.0) is False  # no leader known: nothing sent
    out = node.out()
    assert out.sends == [] and node.core.state == NodeState.STOPPING
    r.leader_id = "n1"
    assert node.core.request_leave(1.1) is False
    assert [(s.dest, s.msg) for s in node.out().sends] == [("n1:8400", LeaveRequest("n2"))]
    r.voters = {"n1": raft_addr("n1"), "n3": raft_addr("n3")}
    assert node.core.request_leave(1.2) is True
    assert node.out().sends == []
    assert Node(raft=False).core.request_leave(0.0) is True


# -- the views ---------------------------------------------------------------------


def test_adapters_read_the_real_cores():
    """RaftCoreView / GossipMembershipView give the values of the cores they wrap."""
    from clusterfunk.cluster.views import GossipMembershipView, RaftCoreView
    from clusterfunk.gossip.config import LAN
    from clusterfunk.gossip.core import GossipCore
    from clusterfunk.raft.core import RaftCore
    from clusterfunk.raft.storage import MemoryStorage

    raft = RaftCore("n1", MemoryStorage(), ClusterStateMachine(), random.Random(1),
                    bootstrap={"n1": "n1:8300"})
    rv = RaftCoreView(raft)
    assert (rv.role, rv.term, rv.leader_id, rv.commit_index) == \
        (Role.FOLLOWER, raft.term, None, raft.commit_index)
    assert dict(rv.voters) == {"n1": "n1:8300"} and dict(rv.nonvoters) == {}
    assert list(rv.followers()) == [] and rv.match_index("n2") is None
    assert rv.heartbeat_echo("n2") is None
    gossip = GossipCore("n1", "n1:7946", random.Random(1), LAN, {TAG_RAFT: "n1:8300"})
    gossip.start(0.0)
    gv = GossipMembershipView(gossip)
    assert gv.joined is False
    assert gv.members() == [MemberInfo("n1", Status.ALIVE, {TAG_RAFT: "n1:8300"})]
    assert gv.member("n1") == gv.members()[0] and gv.member("n2") is None
    assert type(gv.members()[0].status) is Status


# -- the trace schema ------------------------------------------------------------------


def _schema_values(event: str, field: str) -> set[str]:
    """The values docs/trace.md lists for ``field`` of ``event``: the backticked
    words in the parentheses after the field name in that event's table row."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).parents[2] / "docs" / "trace.md"
    (row,) = [line for line in doc.read_text().splitlines()
              if line.startswith(f"| `{event}` |")]
    m = re.search(rf"`{field}` \(([^)]*)\)", row)
    assert m is not None, (event, field)
    return set(re.findall(r"`([a-z]+)`", m.group(1)))


def test_enum_values_are_the_trace_schema_strings():
    """States, roles and statuses are StrEnums whose values are exactly the strings
    docs/trace.md lists, so traces keep their schema."""
    assert {s.value for s in NodeState} == _schema_values("cluster.state", "state")
    assert {r.value for r in NodeRole} == _schema_values("cluster.state", "role")
    assert {r.value for r in Role} == _schema_values("raft.role", "role")
    assert {s.value for s in Status} == _schema_values("gossip.member", "status")
    assert f"{NodeState.OPERATIONAL}" == "operational" and NodeRole.LEADER == "leader"


def test_membership_view_reuses_infos_only_while_status_and_tags_are_the_same():
    """GossipMembershipView.members keeps a member's MemberInfo while the core's
    snapshot still says the same, and makes a new one when its status or tags
    change; a member gossip forgot is gone from the next read."""
    from clusterfunk.cluster.views import GossipMembershipView
    from clusterfunk.gossip.state import Member

    class FakeGossip:
        joined = True

        def __init__(self) -> None:
            self.list: list[Member] = []

        def members(self) -> list[Member]:
            return [Member(m.name, m.addr, m.status, m.incarnation, dict(m.tags))
                    for m in self.list]

    core = FakeGossip()
    core.list = [Member("a", "a:1", "alive", 1, {"k": "1"}),
                 Member("b", "b:1", "alive", 1, {})]
    gv = GossipMembershipView(core)  # type: ignore[arg-type]
    first = gv.members()
    assert first == [MemberInfo("a", Status.ALIVE, {"k": "1"}), MemberInfo("b", Status.ALIVE, {})]
    again = gv.members()
    assert again == first and again[0] is first[0] and again[1] is first[1]
    core.list = [Member("a", "a:1", "alive", 2, {"k": "2"}),
                 Member("b", "b:1", "suspect", 1, {})]
    changed = gv.members()
    assert changed == [MemberInfo("a", Status.ALIVE, {"k": "2"}),
                       MemberInfo("b", Status.SUSPECT, {})]
    assert type(changed[1].status) is Status
    core.list = [core.list[0]]
    assert gv.members() == [changed[0]]
    core.list = [Member("a", "a:1", "alive", 2, {"k": "2"}), Member("b", "b:1", "dead", 1, {})]
    assert gv.members()[1] == MemberInfo("b", Status.DEAD, {})
