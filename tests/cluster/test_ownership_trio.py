"""Shard ownership through the Trio API: three loopback nodes, then a fourth joins.
The release hooks run (in the Cluster's own tasks) with exactly the shards each node
loses, before the new map commits; a hook that overruns ``release_timeout`` is cut
short and counted, and its node's late ack gets it quarantined."""

from __future__ import annotations

import trio

from .test_node import _node, _wait


async def test_release_hooks_exclusive_ownership_and_an_overrunning_hook():
    calls: dict[str, list[frozenset[int]]] = {"a": [], "b": [], "c": []}

    def recorder(name: str, delay: float = 0.0):
        async def hook(shards: frozenset[int]) -> None:
            calls[name].append(shards)
            await trio.sleep(delay)
        return hook

    async with _node("a", [], on_release=recorder("a")) as a:
        seed = [a.addresses["gossip"]]
        async with (
            _node("b", seed, on_release=recorder("b")) as b,
            # c's hook sleeps past both its release timeout and the leader's ack timeout
            _node("c", seed, on_release=recorder("c", delay=5.0), release_timeout=0.8) as c,
        ):
            nodes = [a, b, c]
            await _wait(lambda: all(len(n.nodes()) == 3 and len(n.owned()) == 40
                                    for n in nodes))
            streams = {n.node_id: n.ownership() for n in nodes}
            owned = {n.node_id: n.owned() for n in nodes}
            assert frozenset().union(*owned.values()) == frozenset(range(120))
            assert sum(len(s) for s in owned.values()) == 120  # disjoint
            for n in nodes:
                assert all(n.serves(s) for s in owned[n.node_id])
                assert n.worker_id() == n.shard_map().worker_id(n.node_id)
            before = {k: len(v) for k, v in calls.items()}
            async with _node("d", seed) as d:
                await _wait(lambda: "d" in a.nodes() and d.owned()
                            and all(n.state() == "operational" for n in (a, b, d)))
                # every shard a node lost went through its release hook, announced
                # on its ownership stream first as lost (several rounds may run: c
                # is quarantined, then let back in)
                for n in (a, b):
                    lost = owned[n.node_id] - n.owned()
                    hooked = frozenset().union(*calls[n.node_id][before[n.node_id]:])
                    assert lost and lost <= hooked
                    gained, first_lost, _index = streams[n.node_id].receive_nowait()
                    assert gained == frozenset() and first_lost == calls[n.node_id][
                        before[n.node_id]]
                # c's hook overran: cut at release_timeout, its ack was late
                assert calls["c"] and c.release_overruns >= 1
                assert a.coord.stats.get("ack timeouts", 0) >= 1  # quarantined for it
                # at every moment after the commit: each shard served by one node
                served = [n.owned() for n in (a, b, c, d)]
                assert sum(len(s) for s in served) == len(frozenset().union(*served))
            for s in streams.values():
                s.close()
