"""Operator actions on the Trio API (used by the management API and ``ctl``):
leadership transfer, removing a node, changing the voter target."""

from __future__ import annotations

import pytest
import trio

from clusterfunk.raft.errors import NotLeader
from tests.cluster.test_node import _node, _wait


async def test_transfer_remove_and_voter_target() -> None:
    async with _node("a", []) as a:
        seed = [a.addresses["gossip"]]
        async with _node("b", seed) as b, _node("c", seed) as c, _node("d", seed) as d:
            nodes = [a, b, c, d]
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 4
                                    for n in nodes), timeout=30)
            assert a.role() == "leader"
            raft = a.raft_core
            assert raft is not None
            # promotions to the voter target come one configuration change at a time,
            # each once the non-voter caught up: they may trail the map's commit
            await _wait(lambda: len(raft.configuration.voters) == 3, timeout=30)

            # a follower refuses, naming the leader
            with pytest.raises(NotLeader) as info:
                await b.remove_node("c")
            assert info.value.leader_id == "a"

            # hand leadership over; the map is recommitted by the new leader
            with trio.fail_after(10):
                new = await a.transfer_leadership()
            assert new != "a"
            leader = {"b": b, "c": c, "d": d}[new]
            await _wait(lambda: leader.role() == "leader" and leader.state() == "operational")

            # remove a live node: out of Raft and out of the map, and it stays out while
            # gossip still reports it alive (as a killed node would be until declared dead)
            victim_name = next(n for n in ("c", "d", "b") if n != new)
            # bounded generously: a new leader holds map changes that drop nodes for
            # its takeover wait (3 s), then every remaining node releases and acks
            with trio.fail_after(40):
                await leader.remove_node(victim_name)
            lraft = leader.raft_core
            assert lraft is not None
            assert victim_name not in lraft.configuration.members()
            assert victim_name not in leader.nodes()
            await trio.sleep(1.5)  # several reconciliation rounds
            assert victim_name not in lraft.configuration.members()
            await _wait(lambda: victim_name not in leader.nodes() and len(leader.nodes()) == 3)

            # lower the voter target to 1, then back to 3
            with trio.fail_after(40):
                await leader.set_voters(1)
            assert list(lraft.configuration.voters) == [new]
            with trio.fail_after(40):
                await leader.set_voters(3)
            assert len(lraft.configuration.voters) == 3
            stats = leader.driver_stats()
            assert set(stats) == {"gossip", "raft", "coord"}
            assert stats["raft"].frames_out > 0 and stats["gossip"].datagrams_in > 0
