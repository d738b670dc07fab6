"""The Trio API: several RaftNodes in one process on loopback (real sockets)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from clusterfunk.raft import events as rev
from clusterfunk.raft import kv
from clusterfunk.raft.api import NotLeader, RaftNode, Timeout
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.runtime.net import free_port

CFG = RaftConfig(election_timeout=0.3, heartbeat_interval=0.03)


def addresses(n: int) -> dict[str, str]:
    return {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}


class Cluster:
    """Each node runs in its own task (trio nests scopes: nodes stop in any order
    only when each lives in its own task)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.scopes: dict[str, trio.CancelScope] = {}
        self.stopped: dict[str, trio.Event] = {}

    async def add(self, sid: str, bind: str, peers: dict[str, str], **kw) -> RaftNode:
        kw.setdefault("config", CFG)
        node = RaftNode(
            sid, bind, peers=peers, storage=MemoryStorage(), state_machine=kv.KVStore(), **kw
        )
        self.stopped[sid] = trio.Event()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            try:
                with trio.CancelScope() as scope:
                    self.scopes[sid] = scope
                    async with node:
                        task_status.started()
                        await trio.sleep_forever()
            finally:
                self.stopped[sid].set()

        await self.nursery.start(run)
        return node

    async def stop(self, sid: str) -> None:
        self.scopes[sid].cancel()
        await self.stopped[sid].wait()


async def start(stack: AsyncExitStack, peers: dict[str, str], ids=None, **kw):
    nursery = await stack.enter_async_context(trio.open_nursery())
    stack.callback(nursery.cancel_scope.cancel)
    cluster = Cluster(nursery)
    nodes = {}
    for sid in ids or peers:
        nodes[sid] = await cluster.add(sid, peers[sid], peers, **kw)
    return nodes, cluster


async def leader_of(nodes: dict[str, RaftNode], timeout: float = 5.0) -> RaftNode:
    with trio.fail_after(timeout):
        while True:
            leaders = [n for n in nodes.values() if n.is_leader]
            if len(leaders) == 1:
                lead = leaders[0]
                if all(n.leader == lead.server_id for n in nodes.values()):
                    return lead
            await trio.sleep(0.01)


async def test_apply_read_and_not_leader():
    peers = addresses(3)
    async with AsyncExitStack() as stack:
        nodes, _cluster = await start(stack, peers)
        lead = await leader_of(nodes)
        assert await lead.apply(kv.encode_put("k", "v1"), timeout=2) is None
        assert await lead.apply(kv.encode_cas("k", "v1", "v2"), timeout=2) is True
        assert await lead.apply(kv.encode_get("k"), timeout=2) == "v2"
        assert await lead.read(lambda sm: sm.get("k"), timeout=2) == "v2"
        assert await lead.read(lambda sm: sm.get("k"), timeout=2, lease=True) == "v2"
        assert lead.commit_index >= 4 and lead.term >= 1
        assert sorted(lead.configuration.voters) == ["n1", "n2", "n3"]
        follower = next(n for n in nodes.values() if n is not lead)
        with pytest.raises(NotLeader) as ei:
            await follower.apply(kv.encode_put("k", "x"), timeout=1)
        assert ei.value.leader_id == lead.server_id
        assert ei.value.leader_address == peers[lead.server_id]
        with pytest.raises(NotLeader):
            await follower.read(lambda sm: sm.get("k"), timeout=1)
        # The follower applies the same entries.
        await follower.wait_applied(lead.last_applied, timeout=2)
        assert follower.state_machine.get("k") == "v2"


async def test_events_stream_and_leader_failover_keeps_acknowledged_writes():
    peers = addresses(3)
    async with AsyncExitStack() as outer:
        nodes, cluster = await start(outer, peers)
        lead = await leader_of(nodes)
        acked = []
        for i in range(20):
            await lead.apply(kv.encode_put(f"k{i}", f"v{i}"), timeout=2)
            acked.append(i)
        survivors = {k: n for k, n in nodes.items() if n is not lead}
        watcher = next(iter(survivors.values()))
        async with watcher.events() as events:
            await cluster.stop(lead.server_id)
            seen = []
            with trio.fail_after(5):
                async for ev in events:
                    seen.append(ev)
                    if isinstance(ev, rev.LeaderChanged) and ev.leader_id not in (
                        None,
                        lead.server_id,
                    ):
                        break
        assert any(isinstance(e, rev.LeaderChanged) for e in seen)
        new = await leader_of(survivors)
        assert new.term > lead.term
        for i in acked:
            assert await new.apply(kv.encode_get(f"k{i}"), timeout=2) == f"v{i}"


async def test_transfer_leadership():
    peers = addresses(3)
    async with AsyncExitStack() as stack:
        nodes, _cluster = await start(stack, peers)
        lead = await leader_of(nodes)
        target = sorted(k for k in nodes if k != lead.server_id)[0]
        got = await lead.transfer_leadership(target, timeout=3)
        assert got == target
        new = await leader_of(nodes)
        assert new.server_id == target
        assert await new.apply(kv.encode_put("a", "b"), timeout=2) is None


async def test_membership_add_nonvoter_promote_and_remove():
    peers = addresses(4)
    boot = {k: v for k, v in peers.items() if k != "n4"}
    async with AsyncExitStack() as stack:
        nodes, cluster = await start(stack, boot)
        lead = await leader_of(nodes)
        await lead.apply(kv.encode_put("x", "1"), timeout=2)
        n4 = await cluster.add("n4", peers["n4"], {}, bootstrap=False)
        await lead.add_nonvoter("n4", peers["n4"], timeout=3)
        assert "n4" in lead.configuration.nonvoters
        await n4.wait_applied(lead.commit_index, timeout=3)
        assert n4.state_machine.get("x") == "1"
        await lead.add_voter("n4", peers["n4"], timeout=3)
        assert sorted(lead.configuration.voters) == ["n1", "n2", "n3", "n4"]
        victim = next(k for k in nodes if k != lead.server_id)
        await lead.remove_server(victim, timeout=3)
        assert victim not in lead.configuration.voters
        assert await lead.apply(kv.encode_get("x"), timeout=2) == "1"


async def test_apply_times_out_without_a_quorum():
    peers = addresses(3)
    async with AsyncExitStack() as stack:
        nodes, cluster = await start(stack, peers)
        lead = await leader_of(nodes)
        for n in nodes.values():
            if n is not lead:
                await cluster.stop(n.server_id)
        with pytest.raises(Timeout):
            await lead.apply(kv.encode_put("k", "v"), timeout=0.1)
        assert not lead.server.requests.proposals  # the timed-out waiter is forgotten


async def test_events_queue_is_unbounded_and_ordered():
    """A subscriber that does not read while leadership moves around still gets
    every role / leader change, in order, afterwards."""
    peers = addresses(3)
    async with AsyncExitStack() as stack:
        nodes, _cluster = await start(stack, peers)
        lead = await leader_of(nodes)
        async with lead.events() as events:
            for _ in range(3):
                cur = await leader_of(nodes)
                target = sorted(k for k in nodes if k != cur.server_id)[0]
                await cur.transfer_leadership(target, timeout=3)
                await leader_of(nodes)
            got = []
            while True:
                try:
                    got.append(events.receive_nowait())
                except trio.WouldBlock:
                    break
        roles = [e for e in got if isinstance(e, rev.RoleChanged)]
        leaders = [e.leader_id for e in got if isinstance(e, rev.LeaderChanged)]
        assert roles and roles[0].role != "leader"  # it handed over first
        assert [r.term for r in roles] == sorted(r.term for r in roles)
        assert len([x for x in leaders if x is not None]) >= 2


async def test_pending_apply_fails_with_leadership_lost_when_the_leader_steps_down():
    from clusterfunk.raft.api import LeadershipLost

    peers = addresses(3)
    async with AsyncExitStack() as stack:
        nodes, cluster = await start(stack, peers)
        lead = await leader_of(nodes)
        for n in nodes.values():
            if n is not lead:
                await cluster.stop(n.server_id)
        # CheckQuorum: without contact to a quorum for an election timeout the leader
        # steps down, and the fate of what it proposed is unknown to it.
        with trio.fail_after(5), pytest.raises(LeadershipLost):
            await lead.apply(kv.encode_put("k", "v"), timeout=None)
        assert lead.role != "leader"
        with pytest.raises(NotLeader):
            await lead.apply(kv.encode_put("k", "v"), timeout=1)


async def test_single_node_on_port_zero_bootstraps_itself():
    async with RaftNode(
        "solo", "127.0.0.1:0", storage=MemoryStorage(), state_machine=kv.KVStore(), config=CFG
    ) as node:
        assert not node.address.endswith(":0")
        assert node.configuration.voters == {"solo": node.address}
        with trio.fail_after(5):
            await node.wait_leader()
        assert node.is_leader
        assert await node.apply(kv.encode_put("a", "1"), timeout=2) is None
        assert await node.read(lambda sm: sm.get("a"), timeout=2) == "1"


async def test_events_plain_async_for_and_unsubscribe():
    import gc

    async with RaftNode(
        "solo", "127.0.0.1:0", storage=MemoryStorage(), state_machine=kv.KVStore(), config=CFG
    ) as node:
        stream = node.events()
        with trio.fail_after(5):
            async for ev in stream:  # the election of the only voter
                if isinstance(ev, rev.LeaderChanged) and ev.leader_id == "solo":
                    break
        assert len(node._events) == 1
        del stream, ev
        gc.collect()
        # a dropped stream is unsubscribed at the next event
        await node.add_nonvoter("ghost", "127.0.0.1:9", timeout=2)
        assert len(node._events) == 0
        async with node.events() as events:
            assert len(node._events) == 1
        assert len(node._events) == 0 and events is not None
