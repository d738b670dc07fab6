"""The Trio API: three real nodes on loopback reach one agreed committed map."""

from __future__ import annotations

import time

import attrs
import trio

from clusterfunk.cluster.coordinator import CoordinatorConfig
from clusterfunk.gossip.config import LOCAL
from clusterfunk.node import Cluster
from clusterfunk.raft.config import RaftConfig

FAST_RAFT = RaftConfig(election_timeout=0.3, heartbeat_interval=0.03)
FAST_COORD = CoordinatorConfig(reshard_delay=0.1, ack_timeout=0.5)
FAST_GOSSIP = attrs.evolve(LOCAL, probe_interval=0.2, gossip_interval=0.05)


def _node(name: str, seeds: list[str], **kw) -> Cluster:
    return Cluster(
        name, bind_host="127.0.0.1", seeds=seeds, shards=120, gossip_port=0, raft_port=0,
        coord_port=0, raft_config=FAST_RAFT, coord_config=FAST_COORD,
        gossip_config=FAST_GOSSIP, **kw,
    )


async def _wait(pred, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.02)


async def test_three_nodes_reach_operational_with_an_agreed_map(tmp_path):
    async with _node("a", [], data_dir=tmp_path / "a") as a:
        events = a.events()
        seed = [a.addresses["gossip"]]
        async with (
            _node("b", seed) as b,
            _node("c", seed) as c,
            _node("client", seed, member=False) as client,
        ):
            nodes = [a, b, c]
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 3
                                    for n in nodes))
            # a gossip-only member is a client: it never enters Raft or the map
            assert client.role() == "nonmember"
            assert client.get_endpoint("a", "raft") == a.addresses["raft"]
            assert "client" not in a.raft_core.configuration.members()
            maps = [n.shard_map() for n in nodes]
            assert maps[0] == maps[1] == maps[2]
            assert maps[0].nodes == ("a", "b", "c")
            assert sorted(maps[0].counts().values()) == [40, 40, 40]
            assert {n.leader() for n in nodes} == {"a"}
            assert a.role() == "leader"
            # voters target 3: the promotions may land after the map that has all three
            await _wait(lambda: {b.role(), c.role()} == {"follower"})
            assert a.created() is not None and abs(a.created() - time.time()) < 60
            assert b.created() == a.created()
            owner = a.owner(7)
            assert owner == b.owner(7) == c.owner(7) == maps[0].lookup(7)
            assert a.owner("user:1") == c.owner("user:1")
            # endpoints travel by gossip tags
            b.set_endpoint("http", "127.0.0.1:9999")
            await _wait(lambda: c.get_endpoint("b", "http") == "127.0.0.1:9999")
            assert a.get_endpoint("c", "raft") == c.addresses["raft"]
            # the leader saw its own transitions, in order, without drops
            seen = []
            while True:
                try:
                    seen.append(events._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            assert ("operational", "leader") in seen
            assert seen.index(("resharding", "leader")) < seen.index(("operational", "leader"))
        # b and c left: the leader removes them and reshards down to itself
        await _wait(lambda: a.nodes() == ["a"] and a.state() == "operational")
        events.close()
