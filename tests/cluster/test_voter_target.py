"""The operator's voter target survives a leader change: it is a ``VoterTarget`` entry
of the Raft log, applied by every node's state machine and honoured by every later
leader (voter target rule, docs/cluster.md).

On the state machine, on the coordinator over fakes (the rule tests' ``Node``), and
on three real in-process nodes whose leadership moves."""

from __future__ import annotations

import attrs
import msgpack
import pytest
import trio

from clusterfunk import wire
from clusterfunk.cluster.coordinator import (
    AddVoter,
    Propose,
    RemoveServer,
)
from clusterfunk.cluster.messages import VoterTarget
from clusterfunk.cluster.statemachine import (
    ClusterStateMachine,
    Ignored,
    IgnoreReason,
    VotersApplied,
)
from clusterfunk.node import Cluster
from clusterfunk.raft.errors import NotLeader
from tests.cluster.test_coordinator_rules import Node, actions, entries, proposes
from tests.cluster.test_node import FAST_COORD, FAST_GOSSIP, FAST_RAFT, _wait


def _target(n: int) -> bytes:
    return wire.encode(VoterTarget(n))


# -- the state machine --------------------------------------------------------------


def test_state_machine_applies_the_last_target_and_ignores_a_bad_one():
    sm = ClusterStateMachine()
    assert sm.voters is None
    assert sm.apply(1, _target(5)) == VotersApplied(1, 5)
    assert sm.apply(2, _target(2)) == VotersApplied(2, 2)
    r = sm.apply(3, _target(0))
    assert isinstance(r, Ignored) and r.reason is IgnoreReason.BAD_VOTER_TARGET
    assert sm.voters == 2


def test_the_target_is_in_the_snapshot_and_a_version_1_snapshot_still_restores():
    sm = ClusterStateMachine()
    sm.apply(1, _target(4))
    other = ClusterStateMachine()
    other.restore(sm.snapshot())
    assert other.voters == 4 and other.snapshot() == sm.snapshot()
    old = ClusterStateMachine()
    old.restore(msgpack.packb([1, 12.5, None, None]))  # written before the target existed
    assert old.voters is None and old.created == 12.5
    for bad in ([2, None, None, None, 0], [2, None, None, None, "3"], [1, None, None, None, 3]):
        with pytest.raises(ValueError):
            ClusterStateMachine().restore(msgpack.packb(bad))


# -- the coordinator ------------------------------------------------------------------


def test_the_leader_proposes_the_target_a_follower_refuses_and_it_applies_everywhere():
    leader = Node(unresponsive_after=0)
    follower = Node(me="n2", unresponsive_after=0)
    leader.committed_round()
    assert follower.core.set_voter_target(1.0, 2) is False
    assert actions(follower.out()) == []
    with pytest.raises(ValueError):
        leader.core.set_voter_target(1.0, 0)
    assert leader.core.set_voter_target(1.0, 2) is True
    (p,) = proposes(leader.out())
    assert entries(p) == [VoterTarget(2)] and p.round is False
    # nothing changes before the entry is applied: the target is the log's
    assert leader.core.voters_wanted() == 3 and leader.core.voter_target is None
    out = leader.apply(1.1, p.commands)
    follower.apply(1.1, p.commands)
    assert leader.core.voter_target == follower.core.voter_target == 2
    assert follower.core.voters_wanted() == 2
    assert RemoveServer("n3") in actions(out)  # the demotion rule, at once


def test_a_new_leader_honours_the_logged_target_not_its_own_setting():
    # n2 is configured for 3 voters; the log says 5: winning, it promotes n4
    node = Node(me="n2", voters=("n1", "n2", "n3"), nonvoters=("n4", "n5"),
                unresponsive_after=0)
    node.apply(0.1, (_target(5),))
    assert node.core.voters_wanted() == 5
    out = node.win(1.0)
    assert AddVoter("n4", "n4:8300") in actions(out)
    # and one configured for 3 whose log says 1 demotes instead
    low = Node(me="n2", unresponsive_after=0)
    low.apply(0.1, (_target(1),))
    assert RemoveServer("n3") in actions(low.win(1.0))
    # without a logged target the configured number holds: nothing to change
    plain = Node(me="n2", unresponsive_after=0)
    assert [a for a in actions(plain.win(1.0)) if isinstance(a, AddVoter | RemoveServer)] == []


def test_a_refused_target_proposal_does_not_give_up_the_reshard_round():
    node = Node(unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))  # the round's proposal is in flight
    assert node.core.round is not None
    node.core.set_voter_target(0.6, 2)
    (t,) = proposes(node.out())
    node.core.action_failed(0.6, t, "NotLeader: gone")
    assert node.core.round is not None  # a round's own refused Propose would drop it
    node.core.action_failed(0.6, Propose(p.commands), "NotLeader: gone")
    assert node.core.round is None


# -- three real nodes, the leadership moves -------------------------------------------


def _node(name: str, seeds: list[str]) -> Cluster:
    """A loopback node configured for ONE voter."""
    return Cluster(name, seeds=seeds, shards=60, gossip_port=0, raft_port=0, coord_port=0,
                   raft_config=FAST_RAFT, coord_config=attrs.evolve(FAST_COORD, voters=1),
                   gossip_config=FAST_GOSSIP)


@pytest.mark.slow
async def test_the_target_survives_a_leader_change() -> None:
    """Every node is configured for 1 voter; the operator asks for 3. After the
    leadership moves, the new leader (configured for 1 too) keeps 3 voters: its
    reconciliation on winning runs before its first reshard, so by the time its map
    is committed a demotion would have been committed already."""
    async with _node("a", []) as a:
        seed = [a.addresses["gossip"]]
        async with _node("b", seed) as b, _node("c", seed) as c:
            nodes = {"a": a, "b": b, "c": c}
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 3
                                    for n in nodes.values()), timeout=30)
            raft = a.raft_core
            assert raft is not None and list(raft.configuration.voters) == ["a"]
            with pytest.raises(NotLeader):
                await b.set_voters(3)
            with trio.fail_after(30):
                await a.set_voters(3)
            assert len(raft.configuration.voters) == 3
            await _wait(lambda: all(n.coord.voter_target == 3 for n in nodes.values()))

            with trio.fail_after(10):
                new = await a.transfer_leadership()
            leader = nodes[new]
            lraft = leader.raft_core
            assert lraft is not None and leader.coord.cfg.voters == 1
            # the new leader's own reshard (every new leader reshards once)
            await _wait(lambda: leader.role() == "leader" and leader.coord.committed is not None
                        and leader.coord.committed.leader == new
                        and leader.state() == "operational", timeout=30)
            assert len(lraft.configuration.voters) == 3
            assert leader.coord.voters_wanted() == 3
