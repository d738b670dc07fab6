"""The replicated cluster state machine and the coordinator's handling of bad input."""

from __future__ import annotations

import random

import pytest

from clusterfunk import wire
from clusterfunk.cluster.coordinator import CoordinatorCore
from clusterfunk.cluster.messages import (
    Ack,
    Bootstrap,
    ProposedShardMap,
    ShardMapCommitted,
    map_digest,
)
from clusterfunk.cluster.statemachine import (
    BootstrapApplied,
    ClusterStateMachine,
    CommitApplied,
    Ignored,
    ProposalApplied,
)
from clusterfunk.sharding import ShardMap


def _proposal(nodes, base=None, leader="n1", term=1):
    m, report = (base or ShardMap(100)).update(nodes)
    e = ProposedShardMap(leader, term, f"{leader}:8400", tuple(m.nodes), report.moved, m.encode())
    return m, wire.encode(e)


def test_proposal_is_not_in_force_until_committed():
    sm = ClusterStateMachine()
    m, cmd = _proposal(["a", "b"])
    r = sm.apply(5, cmd)
    assert isinstance(r, ProposalApplied) and r.record.nodes == ("a", "b")
    assert sm.committed is None and sm.committed_map() is None
    assert sm.proposed_map() == m
    r = sm.apply(6, wire.encode(ShardMapCommitted(5, ("a", "b"))))
    assert isinstance(r, CommitApplied) and r.record.index == 5
    assert sm.committed_map() == m and sm.proposal is None
    assert r.record.digest == map_digest(m.encode())


def test_stale_or_mismatched_commits_are_ignored():
    sm = ClusterStateMachine()
    _m1, p1 = _proposal(["a", "b"])
    m2, p2 = _proposal(["a", "b", "c"])
    sm.apply(1, p1)
    sm.apply(2, p2)  # a newer proposal replaces the first
    assert isinstance(sm.apply(3, wire.encode(ShardMapCommitted(1, ("a", "b")))), Ignored)
    assert sm.committed is None
    # right index, wrong node list
    assert isinstance(sm.apply(4, wire.encode(ShardMapCommitted(2, ("a", "b")))), Ignored)
    assert isinstance(sm.apply(5, wire.encode(ShardMapCommitted(2, ("a", "b", "c")))),
                      CommitApplied)
    assert sm.committed_map() == m2
    # committing the same proposal twice: the second is stale
    assert isinstance(sm.apply(6, wire.encode(ShardMapCommitted(2, ("a", "b", "c")))), Ignored)
    assert sm.ignored == {"commit of a proposal that is not current": 3}


@pytest.mark.parametrize(
    "cmd",
    [
        b"",
        b"\x93\x01\xc9\x00",
        wire.encode(Ack("x", 1)),  # a valid message, but not a log entry
        wire.encode(ProposedShardMap("n1", 1, "n1:8400", ("a",), 0, b"garbage")),
    ],
)
def test_bad_entries_are_ignored_identically(cmd):
    sm = ClusterStateMachine()
    r = sm.apply(1, cmd)
    assert isinstance(r, Ignored)
    assert sm.proposal is None and sm.committed is None


def test_proposal_whose_nodes_differ_from_its_map_is_ignored():
    m, _ = _proposal(["a", "b"])
    bad = ProposedShardMap("n1", 1, "n1:8400", ("a", "b", "c"), 0, m.encode())
    assert isinstance(ClusterStateMachine().apply(1, wire.encode(bad)), Ignored)


def test_bootstrap_sets_creation_time_once():
    sm = ClusterStateMachine()
    r1 = sm.apply(1, wire.encode(Bootstrap(1000.5)))
    r2 = sm.apply(2, wire.encode(Bootstrap(2000.0)))
    assert isinstance(r1, BootstrapApplied) and r1.first and r1.created == 1000.5
    assert not r2.first and sm.created == 1000.5


def test_snapshot_round_trip_is_deterministic():
    sm = ClusterStateMachine()
    sm.apply(1, wire.encode(Bootstrap(7.0)))
    m, p = _proposal(["a", "b", "c"])
    sm.apply(2, p)
    sm.apply(3, wire.encode(ShardMapCommitted(2, ("a", "b", "c"))))
    _m2, p2 = _proposal(["a", "b"], base=m, term=2)
    sm.apply(4, p2)
    blob = sm.snapshot()
    other = ClusterStateMachine()
    other.restore(blob)
    assert other.snapshot() == blob
    assert other.created == 7.0 and other.committed_map() == m
    assert other.proposal.index == 4
    with pytest.raises(ValueError):
        other.restore(b"\x94\x01\xc0\xc0")
    with pytest.raises(ValueError):
        other.restore(blob[:-3])


class _Gossip:
    joined = True

    def members(self):
        return []


def test_coordinator_drops_and_counts_stray_input():
    sm = ClusterStateMachine()
    c = CoordinatorCore("n2", "n2:8400", random.Random(1), raft=None, gossip=_Gossip(), sm=sm)
    c.start(0.0)
    c.on_message(1.0, "n9:8400", Ack("n9", 3), True)  # not a leader: counted
    c.on_message(1.0, "n9:8400", Bootstrap(1.0), True)  # not a coordination message
    assert c.stats == {"ack while not leader": 1, "unexpected message": 1}
    out = c.drain()
    assert out is not None and out.sends == []
    # results must come in log order: an old one is dropped
    _m, p = _proposal(["n1", "n2"])
    c.applied(2.0, sm.apply(7, p))
    c.applied(2.0, ProposalApplied(6, sm.proposal))
    assert c.stats["result out of order"] == 1
    # the follower acked the proposal to its leader's coordination port
    sends = c.drain().sends
    assert [(s.dest, s.msg) for s in sends] == [("n1:8400", Ack("n2", 7))]
