"""ClusterManaged over real in-process Cluster nodes (loopback, free ports)."""

from __future__ import annotations

import pytest
import trio

from clusterfunk.management.adapter import ClusterManaged
from clusterfunk.management.api import MANAGEMENT_ENDPOINT, ManagedNode, ManagementError
from clusterfunk.node import Cluster

SHARDS = 60


def _node(node_id: str, seeds: list[str]) -> Cluster:
    return Cluster(node_id, gossip_port=0, raft_port=0, coord_port=0, shards=SHARDS,
                   seeds=seeds)


async def _operational(*nodes: Cluster) -> None:
    ids = sorted(n.node_id for n in nodes)
    with trio.fail_after(20):
        while not all(n.state() == "operational" and n.nodes() == ids for n in nodes):
            await trio.sleep(0.05)


@pytest.mark.slow
async def test_views_of_a_two_node_cluster():
    async with _node("a", []) as a, _node("b", [a.addresses["gossip"]]) as b:
        await _operational(a, b)
        ma, mb = ClusterManaged(a), ClusterManaged(b)
        assert isinstance(ma, ManagedNode)
        leader, follower = (ma, mb) if a.leader() == "a" else (mb, ma)

        st = mb.status()
        assert (st["node"], st["state"], st["nodes"]) == ("b", "operational", ["a", "b"])
        assert st["leader"] == a.leader() == b.leader()
        assert st["term"] == b.raft_core.term and st["map_index"] == b.coord.committed.index
        assert st["commit_index"] >= st["map_index"] > 0 and st["created"] == b.created()

        m = b.shard_map()
        nodes = mb.nodes()
        assert [n["node"] for n in nodes] == ["a", "b"]
        assert {n["node"]: n["worker_id"] for n in nodes} == m.worker_ids()
        assert sum(n["shards"] for n in nodes) == SHARDS
        assert sum(n["share"] for n in nodes) == pytest.approx(1.0)
        sh = mb.shards()
        assert (sh["shards"], sh["total_weight"], sh["nodes"]) == (SHARDS, SHARDS, nodes)

        members = {x["node"]: x for x in ma.members()}
        assert set(members) == {"a", "b"}
        assert members["b"]["status"] == "alive" and members["a"]["rtt"] is None
        assert members["b"]["tags"]["ep.raft"] == b.addresses["raft"]

        raft = leader.raft_info()
        assert raft["role"] == "leader" and set(raft["voters"]) == {"a", "b"}
        assert [p["node"] for p in raft["progress"]] == [follower.node_id]
        assert follower.raft_info()["progress"] == []

        d = ma.diag()
        assert d["ok"], d["problems"]
        assert d["last_reshard"]["nodes"] == ["a", "b"]
        # b joined before or after a's first map (timing): either way, said so
        assert d["last_reshard"]["why"] in ("added b", "first map of the cluster")

        c = mb.counters()
        assert c["owned_shards"] == m.counts()["b"]
        assert c["gossip"] == b.gossip_core.stats and c["coordinator"] == b.coord.stats

        # the management address: published, found by name from the other node
        mb.publish_management("127.0.0.1:9999")
        with trio.fail_after(10):
            while ma.endpoint_of("b", MANAGEMENT_ENDPOINT) != "127.0.0.1:9999":
                await trio.sleep(0.05)
        names = {e["name"] for e in ma.endpoints() if e["node"] == "b"}
        assert MANAGEMENT_ENDPOINT in names
        # the tag ep.clusterfunk.management is the HTTP API's; the coordination port
        # (acks, leave requests) has its own tag, which stays reserved
        assert b.gossip_core.member("b").tags["ep.clusterfunk.management"] == "127.0.0.1:9999"
        assert ma.endpoint_of("b", "clusterfunk.coord") == b.addresses["coord"]
        with pytest.raises(ValueError):
            b.set_endpoint("clusterfunk.coord", "127.0.0.1:1")
        assert ma.endpoints("raft") == [
            {"node": "a", "name": "raft", "address": a.addresses["raft"]},
            {"node": "b", "name": "raft", "address": b.addresses["raft"]}]


async def test_a_write_the_cluster_lacks_is_501_and_a_refusal_is_409():
    class Partial:
        node_id = "x"

        async def transfer_leadership(self):
            raise RuntimeError("no other voter")

        def remove_node(self, node_id):
            raise ValueError(f"unknown node {node_id}")

    m = ClusterManaged(Partial())
    with pytest.raises(ManagementError) as e:
        await m.set_voters(3)
    assert e.value.status == 501 and "set_voters" in e.value.message
    with pytest.raises(ManagementError) as e:
        await m.step_down()
    assert e.value.status == 409 and "no other voter" in e.value.message
    with pytest.raises(ManagementError) as e:
        await m.remove_node("q")
    assert e.value.status == 400 and "unknown node q" in e.value.message
