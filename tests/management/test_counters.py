"""The counters the metrics read from the cores: the coordinator's reshard, ack
timeout and quarantine counters (CoordinatorCore.counters(), last_reshard), on the
coordinator over fakes (the rule tests' ``Node``)."""

from __future__ import annotations

from clusterfunk.cluster.coordinator import RESHARD_BUCKETS, CoordinatorCounters
from tests.cluster.test_coordinator_rules import Node, proposes


def test_a_committed_round_counts_one_reshard_with_its_duration():
    node = Node(unresponsive_after=0)
    assert node.core.counters() == CoordinatorCounters(
        0, 0, (0,) * (len(RESHARD_BUCKETS) + 1), 0.0, 0, 0)
    assert node.core.last_reshard is None
    node.committed_round()  # proposed at 0.5, committed at 0.52
    k = node.core.counters()
    assert k.maps_committed == 1 and k.reshards_led == 1
    assert abs(k.reshard_seconds_sum - 0.02) < 1e-9
    assert k.reshard_seconds[0] == 1 and sum(k.reshard_seconds) == 1  # <= 0.05 s
    info = node.core.last_reshard
    assert info is not None and info.first and info.added == ("n1", "n2", "n3")


def test_an_ack_timeout_counts_the_round_and_each_quarantined_node():
    node = Node(voters=("n1", "n2", "n3"), nonvoters=("n4",), unresponsive_after=0)
    node.win(0.0)
    (p,) = proposes(node.tick(0.5))
    node.apply(0.5, p.commands)
    node.ack(0.6, "n2", node.index)  # n3 and n4 never ack
    out = node.tick(1.0)
    k = node.core.counters()
    assert (k.ack_timeouts, k.quarantines, k.maps_committed) == (1, 2, 0)
    # the round without them commits 0.9 s after it was proposed (at 1.0)
    (p2,) = proposes(out)
    node.apply(1.0, p2.commands)
    (c,) = proposes(node.ack(1.5, "n2", node.index))
    node.apply(1.9, c.commands)
    k = node.core.counters()
    assert (k.maps_committed, k.reshards_led) == (1, 1)
    bucket = next(i for i, b in enumerate(RESHARD_BUCKETS) if b >= 0.9)
    assert k.reshard_seconds[bucket] == 1 and abs(k.reshard_seconds_sum - 0.9) < 1e-9
    # n3 comes back after its quarantine: the next map adds it, and says so
    out = node.tick(11.0)
    (p3,) = proposes(out)
    node.apply(11.0, p3.commands)
    index = node.index
    node.ack(11.1, "n2", index)
    node.ack(11.1, "n4", index)
    (c3,) = proposes(node.ack(11.1, "n3", index))
    node.apply(11.2, c3.commands)
    info = node.core.last_reshard
    assert info is not None and not info.first
    assert info.added == ("n3", "n4") and info.removed == ()
    assert node.core.counters().maps_committed == 2


def test_a_follower_counts_the_maps_it_applies_but_leads_no_round():
    leader = Node(unresponsive_after=0)
    follower = Node(me="n2", unresponsive_after=0)
    leader.win(0.0)
    (p,) = proposes(leader.tick(0.5))
    leader.apply(0.5, p.commands)
    follower.apply(0.5, p.commands)
    index = leader.index
    leader.ack(0.6, "n2", index)
    (c,) = proposes(leader.ack(0.6, "n3", index))
    follower.apply(0.7, c.commands)
    k = follower.core.counters()
    assert (k.maps_committed, k.reshards_led, sum(k.reshard_seconds)) == (1, 0, 0)


def test_gossip_counts_each_suspicion_it_starts():
    """The gossip core's ``suspicions`` counter (clusterfunk_gossip_suspicions_total):
    a member marked suspect counts once on the node that marks it; a repeated
    suspicion of the same incarnation (a confirmation) does not count again."""
    from clusterfunk.gossip.messages import Suspect
    from tests.gossip.conftest import Cluster as GossipCluster

    c = GossipCluster(4, seed=3)
    c.run(10.0)
    assert all(c.core(x).stats["suspicions"] == 0 for x in c.sim.names)
    inc = c.view("n1", "n2")[1]
    for accuser in ("n1", "n3"):  # the second is a confirmation on n1
        c.call("n1", lambda core, now, a=accuser: core.on_message(
            now, "n1:7946", Suspect(inc, "n2", a), False))
    assert c.core("n1").stats["suspicions"] == 1
    c.run(20.0)
    assert c.core("n2").stats["refutes"] == 1
    assert c.view("n1", "n2")[0] == "alive"
