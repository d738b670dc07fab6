"""Exclusive shard ownership: the coordinator's ownership rules against fake views.

A follower ``n2`` applies the entries a leader would replicate (built here with the
real :class:`ShardMap`), and the tests assert its outputs: ``shard.release`` /
``shard.acquire`` trace records, :class:`ReleaseShards` / :class:`OwnershipChanged`
events and the :class:`Ack` it sends. Times are the core's local clock (seconds).
"""

from __future__ import annotations

from clusterfunk import wire
from clusterfunk.cluster.coordinator import OwnershipChanged, ReleaseShards, Settle
from clusterfunk.cluster.messages import Ack, ProposedShardMap, ShardMapCommitted
from clusterfunk.raft.roles import Role
from clusterfunk.runtime.api import Output
from clusterfunk.sharding import ShardMap

from .test_coordinator_rules import Node, entries, proposes, traces

N3 = ("n1", "n2", "n3")
N4 = ("n1", "n2", "n3", "n4")


def proposal(base: ShardMap | None, nodes: tuple[str, ...]) -> tuple[bytes, ShardMap]:
    m = base if base is not None else ShardMap(100)
    new, report = m.update(nodes)
    entry = ProposedShardMap("n1", 1, "n1:8400", tuple(new.nodes), report.moved, new.encode())
    return wire.encode(entry), new


def acks(out: Output) -> list[Ack]:
    return [s.msg for s in out.sends if isinstance(s.msg, Ack)]


def events(out: Output, kind: type) -> list[object]:
    return [e for e in out.events if isinstance(e, kind)]


def follower(t: float = 1.0) -> Node:
    """``n2``, a follower that heard its leader at ``t`` (caught up)."""
    node = Node(me="n2")
    r = node.raft
    assert r is not None
    r.role, r.leader_id = Role.FOLLOWER, "n1"
    r.leader_contact = r.leader_commit_at = t
    return node


def catch_up(node: Node, t: float) -> None:
    r = node.raft
    assert r is not None
    r.leader_commit, r.leader_contact, r.leader_commit_at = r.commit_index, t, t


def serving(t: float = 1.0) -> tuple[Node, ShardMap]:
    """A follower serving its shards of a committed 3-node map."""
    node = follower(t)
    cmd, m = proposal(None, N3)
    node.apply(t, (cmd,))
    index = node.index
    node.apply(t, (wire.encode(ShardMapCommitted(index, N3)),))
    catch_up(node, t)
    node.core.settle(t)
    node.out()
    assert node.core.owned == frozenset(m.shards_of("n2"))
    return node, m


def test_gain_rule_shards_are_served_only_after_the_commit_is_applied():
    node = follower()
    cmd, m = proposal(None, N3)
    out = node.apply(1.0, (cmd,))
    assert traces(out, "shard.acquire") == [] and node.core.owned == frozenset()
    assert [a.index for a in acks(out)] == [node.index]  # nothing to release: acked at once
    index = node.index
    node.apply(1.1, (wire.encode(ShardMapCommitted(index, N3)),))
    catch_up(node, 1.1)
    node.core.settle(1.1)
    out = node.out()
    mine = sorted(m.shards_of("n2"))
    assert traces(out, "shard.acquire") == [{"index": index, "shards": mine}]
    assert events(out, OwnershipChanged) == [OwnershipChanged(frozenset(mine), frozenset(), index)]
    assert node.core.owned == frozenset(mine)


def test_gain_rule_waits_until_caught_up_with_the_announced_commit():
    """A node whose commit index is behind what its leader announced (a restart
    replaying an old map, a lagging follower) does not serve from that map."""
    node = follower()
    cmd, _m = proposal(None, N3)
    node.apply(1.0, (cmd,))
    node.apply(1.0, (wire.encode(ShardMapCommitted(node.index, N3)),))
    r = node.raft
    assert r is not None
    r.leader_commit = r.commit_index + 5  # the leader announced later entries
    node.core.settle(1.0)
    out = node.out()
    assert traces(out, "shard.acquire") == [] and node.core.owned == frozenset()
    # retried: the tick asks the glue for a settle
    assert node.core.next_deadline() == 1.0 + node.cfg.gain_retry
    node.core.on_tick(1.1)
    assert events(node.out(), Settle) == [Settle()]
    r.leader_commit = None  # a new term: nothing heard from its leader yet
    node.core.settle(1.2)
    assert node.core.owned == frozenset()
    catch_up(node, 1.3)
    node.core.settle(1.3)
    assert node.core.owned != frozenset()


def test_release_rule_stops_serving_before_the_ack_and_the_ack_waits_for_released():
    node, m = serving()
    cmd, new = proposal(m, N4)
    out = node.apply(2.0, (cmd,))
    index = node.index
    lost = frozenset(m.shards_of("n2")) - frozenset(new.shards_of("n2"))
    assert lost
    assert traces(out, "shard.release") == [{"index": index, "shards": sorted(lost)}]
    assert events(out, ReleaseShards) == [ReleaseShards(index, lost)]
    assert node.core.owned == frozenset(new.shards_of("n2"))
    assert acks(out) == []  # held until the application released
    assert node.core.state == "resharding"
    node.core.released(2.3, index)
    assert acks(node.out()) == [Ack("n2", index)]


def test_held_ack_goes_to_the_latest_proposal_only_after_every_release():
    node, m = serving()
    cmd1, m1 = proposal(m, N4)
    node.apply(2.0, (cmd1,))
    first = node.index
    cmd2, _m2 = proposal(m1, ("n1", "n2", "n3", "n4", "n5"))
    out = node.apply(2.1, (cmd2,))
    second = node.index
    assert acks(out) == [] and traces(out, "shard.release")  # loses more shards
    node.core.released(2.2, second)
    assert acks(node.out()) == []  # the first release is still running
    node.core.released(2.3, first)
    assert acks(node.out()) == [Ack("n2", second)]  # the superseded one is never acked
    node.core.released(2.4, first)  # unexpected: counted, no effect
    assert acks(node.out()) == [] and node.core.stats["unexpected released"] == 1


def test_fencing_rule_lease_expiry_stops_serving_everything():
    node, _m = serving(t=1.0)
    lease_end = 1.0 + node.cfg.lease
    assert node.core.next_deadline() == lease_end
    node.core.on_tick(lease_end - 0.01)
    assert node.core.owned != frozenset()
    node.core.on_tick(lease_end)
    out = node.out()
    assert node.core.owned == frozenset()
    (rel,) = traces(out, "shard.release")
    assert rel["shards"] == sorted(_m.shards_of("n2")) and events(out, ReleaseShards)
    assert node.core.next_deadline() == float("inf")
    # contact again: nothing is served until a commit is applied while caught up
    catch_up(node, 5.0)
    node.core.settle(5.0)
    assert node.core.owned == frozenset(node.core._mine(node.core.committed))


def test_stopping_releases_every_shard():
    node, _m = serving()
    node.core.set_stopping(2.0)
    out = node.out()
    assert node.core.owned == frozenset() and events(out, ReleaseShards)


def test_takeover_rule_a_new_leader_holds_a_commit_that_drops_nodes():
    """Within takeover_wait of winning, a commit whose proposal leaves nodes of the
    committed map out waits (their leases from a deposed leader may still run)."""
    node = Node(unresponsive_after=2.0)
    node.committed_round()  # won at 0.0
    node.beat("n2")
    out = node.tick(2.0)  # n3's echoes stalled: a map without it
    (p,) = proposes(out)
    node.apply(2.0, p.commands)
    out = node.ack(2.05, "n2", node.index)
    assert proposes(out) == []  # every ack in, but held
    assert node.core.round is not None and node.core.round.phase == "holding"
    assert node.core.round.deadline == node.cfg.takeover_wait
    (c,) = proposes(node.tick(node.cfg.takeover_wait))
    assert isinstance(entries(c)[0], ShardMapCommitted)


def test_freeze_rule_a_thawed_node_serves_nothing_until_fresh_leader_contact():
    """Freeze rule: a member ticks every lease/3. Frozen past 2*lease/3 (SIGSTOP, a GC
    or VM stall, ``sim.pause``), it serves nothing while its tick is overdue -- even
    with a leader message received at the thaw, which may have waited in a buffer
    while the leader gave its shards away -- fences at that tick (releases all), and
    gains again only from leader contact received lease/4 after the thaw. (The old
    rule let a resumed holder serve on such a message: --app demo seed 2, 20 nodes.)"""
    node = Node(me="n2", freeze_watch=True)
    r = node.raft
    assert r is not None
    r.role, r.leader_id = Role.FOLLOWER, "n1"
    assert node.core.next_deadline() == node.cfg.lease / 3  # the freeze rule's tick
    step = node.cfg.lease / 4  # the grace after a thaw
    t = 0.0
    while t < 1.0:  # running: ticks on time
        t = node.core.next_deadline()
        node.core.on_tick(t)
    r.leader_contact = r.leader_commit_at = t
    cmd, m = proposal(None, N3)
    node.apply(t, (cmd,))
    node.apply(t, (wire.encode(ShardMapCommitted(node.index, N3)),))
    catch_up(node, t)
    node.core.settle(t)
    node.out()
    mine = frozenset(m.shards_of("n2"))
    assert node.core.owned == mine and node.core.serves(t, min(mine))
    # frozen for 5 s; at the thaw a queued leader message is processed first
    thaw = t + 5.0
    catch_up(node, thaw)
    assert not node.core.serves(thaw, min(mine))  # the tick is overdue: no lease
    node.core.on_tick(thaw)
    out = node.out()
    assert node.core.owned == frozenset()
    (rel,) = traces(out, "shard.release")
    assert rel["shards"] == sorted(mine)
    assert node.core.stats["freezes detected"] == 1
    node.core.settle(thaw + 0.01)  # the gain rule: contact from before the thaw grace
    assert node.core.owned == frozenset()
    t = thaw
    while t < thaw + step:  # running again, but no fresh leader message yet
        t = node.core.next_deadline()
        node.core.on_tick(t)
    assert node.core.owned == frozenset()
    catch_up(node, t + 0.01)  # a leader message received after the grace
    node.core.on_tick(t + 0.01)
    node.core.settle(t + 0.01)
    assert node.core.owned == mine and node.core.serves(t + 0.01, min(mine))


def test_gain_rule_regains_after_a_fence_with_the_same_maps():
    """A settle that finds nothing to gain (already serving) does not hide the
    shards a later fence released: with the same committed map, the next settle
    while caught up serves them again (the gain rule's memo is keyed on the owned
    set too)."""
    node, m = serving(t=1.0)
    mine = frozenset(m.shards_of("n2"))
    node.core.settle(1.1)  # nothing to gain
    assert traces(node.out(), "shard.acquire") == [] and node.core.owned == mine
    node.core.on_tick(1.0 + node.cfg.lease)  # the lease ran out: fenced
    assert node.core.owned == frozenset() and traces(node.out(), "shard.release")
    catch_up(node, 5.0)
    node.core.settle(5.0)
    assert node.core.owned == mine
    assert traces(node.out(), "shard.acquire") == [{"index": node.core.committed.index,
                                                    "shards": sorted(mine)}]
