"""Joining through seeds that do not answer (loopback, in-process Clusters): the node
keeps retrying with backoff, says so in ``join_error``, its status and the log, and
``Cluster.wait_joined(timeout)`` raises a ClusterError naming the seeds tried and how
far the join got."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio

from clusterfunk.gossip.config import LAN
from clusterfunk.management.adapter import ClusterManaged
from clusterfunk.node import Cluster, ClusterError

#: gossip gives up after 2 attempts 0.1 s apart (the default is 10 x 2 s)
FAST = attrs.evolve(LAN, join_retry_interval=0.1, join_max_attempts=2)
NOBODY = "127.0.0.1:9"  # discard port: nothing answers there on loopback


def _node(node_id: str, seeds: list[str], **kw) -> Cluster:
    return Cluster(node_id, gossip_port=0, raft_port=0, coord_port=0, shards=12,
                   seeds=seeds, gossip_config=FAST, **kw)


@pytest.mark.slow
async def test_a_join_nobody_answers_is_retried_reported_and_wait_joined_fails_clearly(caplog):
    caplog.set_level(logging.WARNING, logger="clusterfunk.node")
    found: list[str] = []  # what the "resolver" returns on each retry

    async def resolve() -> list[str]:
        return found or [NOBODY]

    async with _node("b", [NOBODY], resolve_seeds=resolve) as b:
        with pytest.raises(ClusterError) as e:
            await b.wait_joined(0.8)
        msg = str(e.value)
        assert msg.startswith("node b did not join within 0.8 s: no seed answered")
        assert NOBODY in msg and "still retrying" in msg
        with trio.fail_after(10):  # it keeps retrying, with backoff (1 s, then 2 s, ...)
            while b.join_failures < 2:
                await trio.sleep(0.05)
        assert b.state() == "joining"
        assert b.join_error is not None and NOBODY in b.join_error
        assert ClusterManaged(b).status()["join_error"] == b.join_error
        assert any("no seed answered" in r.getMessage() for r in caplog.records)
        # a seed appears (the name now resolves to a live node): the next round joins
        async with _node("a", []) as a:
            found.append(a.addresses["gossip"])
            await b.wait_joined(20)
            assert b.joined() and "b" in a.nodes()
            assert b.join_error is None
            assert "join_error" not in ClusterManaged(b).status()


async def test_wait_joined_names_the_missing_leader_when_gossip_joined():
    # a gossip-only seed: b joins gossip through it, but no Raft leader exists to add b
    async with _node("seed", [], member=False) as seed, \
            _node("b", [], bootstrap=False) as b:
        b.node.join([seed.addresses["gossip"]])
        with trio.fail_after(10):
            while not b.gossip_core.joined:
                await trio.sleep(0.02)
        with pytest.raises(ClusterError) as e:
            await b.wait_joined(0.5)
        msg = str(e.value)
        assert "joined gossip" in msg and "no Raft leader is known to it" in msg
        assert "state joining" in msg
        assert not b.joined()


async def test_a_bootstrapping_node_and_a_client_wait_for_their_own_kind_of_join():
    async with _node("a", []) as a, _node("c", [], member=False) as c:
        with trio.fail_after(20):
            await a.wait_joined(20)  # in its own first map
        assert a.nodes() == ["a"]
        c.node.join([a.addresses["gossip"]])
        await c.wait_joined(10)  # a gossip-only client: joined gossip
        assert c.joined() and "c" not in a.nodes()
