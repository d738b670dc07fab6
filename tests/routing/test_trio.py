"""Routing on the real network: three ``Cluster`` nodes with a service on loopback,
a routing client, and a gossip-only node that sees the committed map."""

from __future__ import annotations

import trio

from clusterfunk.node import Cluster
from clusterfunk.routing.api import RequestFailed
from clusterfunk.routing.client import ClientConfig
from clusterfunk.routing.trio_client import open_client

from ..cluster.test_node import FAST_COORD, FAST_GOSSIP, FAST_RAFT, _wait
from .helpers import Counters


def _node(name: str, seeds: list[str], **kw) -> Cluster:
    return Cluster(
        name, bind_host="127.0.0.1", seeds=seeds, shards=60, gossip_port=0, raft_port=0,
        coord_port=0, app_port=0, raft_config=FAST_RAFT, coord_config=FAST_COORD,
        gossip_config=FAST_GOSSIP, **kw,
    )


async def test_client_routes_to_owners_and_a_nonmember_sees_the_map():
    svc = {n: Counters(n) for n in "abc"}
    async with _node("a", [], service=svc["a"]) as a:
        seed = [a.addresses["gossip"]]
        async with (
            _node("b", seed, service=svc["b"]) as b,
            _node("c", seed, service=svc["c"]) as c,
            _node("watcher", seed, member=False) as watcher,
        ):
            nodes = [a, b, c]
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 3
                                    and len(n.owned()) == 20 for n in nodes))
            async with open_client([a.addresses["app"]],
                                   config=ClientConfig(refresh_interval=0.5)) as client:
                for k in range(30):
                    assert await client.request(k, b"inc", timeout=5.0) == b"1"
                assert await client.request(7, b"inc", timeout=5.0) == b"2"
                with trio.fail_after(5):
                    try:
                        await client.request(3, b"fail", timeout=2.0)
                    except RequestFailed as exc:
                        assert "asked to fail" in str(exc)
                    else:
                        raise AssertionError("an error answer must raise")
            # every request was served by its owner, first try: nobody answered moved
            stats = {n.node_id: n.request_stats() for n in nodes}
            assert sum(s["ok"] for s in stats.values()) == 31
            assert all(s["moved"] == 0 for s in stats.values())
            for n in nodes:
                served = {s for s, kv in svc[n.node_id].shards.items() if kv}
                assert served <= n.owned()
            # the gossip-only node fetched the committed map from a member
            await _wait(lambda: watcher.shard_map() is not None)
            assert watcher.shard_map() == a.shard_map()
            assert watcher.owner(12345) == a.owner(12345)
            assert watcher.nodes() == ["a", "b", "c"]
            assert watcher.map_index() == a.map_index()


async def test_requests_keep_succeeding_while_a_node_leaves():
    svc = {n: Counters(n) for n in "abc"}
    results: list = []
    stop_c = trio.Event()

    async def run_c(seed: list[str], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with _node("c", seed, service=svc["c"]) as c:
            task_status.started(c)
            await stop_c.wait()  # then a graceful stop: c leaves the cluster

    async with _node("a", [], service=svc["a"]) as a:
        seed = [a.addresses["gossip"]]
        async with _node("b", seed, service=svc["b"]) as b, trio.open_nursery() as nursery:
            c = await nursery.start(run_c, seed)
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 3
                                    and len(n.owned()) == 20 for n in (a, b, c)))
            c_shards = set(c.owned())
            async with open_client([a.addresses["app"], b.addresses["app"]],
                                   config=ClientConfig(refresh_interval=0.5)) as client:
                stop = trio.Event()

                async def load() -> None:
                    k = 0
                    while not stop.is_set():
                        ev = await client.finish(k % 60, b"inc", 3.0)
                        results.append((trio.current_time(), k % 60, ev))
                        k += 1

                async with trio.open_nursery() as load_nursery:
                    load_nursery.start_soon(load)
                    await trio.sleep(0.5)
                    left_at = trio.current_time()
                    stop_c.set()
                    await _wait(lambda: a.nodes() == ["a", "b"]
                                and len(a.owned()) + len(b.owned()) == 60)
                    await trio.sleep(1.0)
                    stop.set()
    failed = [ev for _t, _k, ev in results if not ev.ok]
    # a request fails only at its deadline, never early or silently
    assert all(ev.latency >= 3.0 - 0.01 for ev in failed), failed
    after = [(k, ev) for t, k, ev in results if t > left_at and ev.ok]
    assert any(k in c_shards for k, _ev in after)  # c's keys were served by the others
    assert len(after) > 20
    # c handed its state over as it left: its keys' counters go on where they were
    last: dict[int, int] = {}
    for _t, k, ev in sorted(results, key=lambda r: r[0]):
        if ev.ok:
            assert int(ev.payload) > last.get(k, 0), (k, ev.payload, last.get(k))
            last[k] = int(ev.payload)


async def test_tls_app_port_serves_certified_clients_only(tmp_path):
    from clusterfunk.runtime.tls import load_tls_dir
    from clusterfunk.security.certs import write_certs

    write_certs(tmp_path, ["a", "b", "w"])
    svc = {n: Counters(n) for n in "ab"}
    async with _node("a", [], service=svc["a"], tls=load_tls_dir(tmp_path, "a")) as a:
        seed = [a.addresses["gossip"]]
        async with _node("b", seed, service=svc["b"], tls=load_tls_dir(tmp_path, "b")) as b:
            await _wait(lambda: all(n.state() == "operational" and len(n.nodes()) == 2
                                    and len(n.owned()) == 30 for n in (a, b)), timeout=30)
            async with open_client([a.addresses["app"]],
                                   tls=load_tls_dir(tmp_path, "client")) as client:
                for k in range(10):
                    assert await client.request(k, b"inc", timeout=5.0) == b"1"
            # a gossip-only node with a certificate fetches the map over TLS
            async with _node("w", seed, member=False, tls=load_tls_dir(tmp_path, "w")) as w:
                await _wait(lambda: w.shard_map() is not None, timeout=20)
                assert w.shard_map() == a.shard_map()
            # a client without a certificate gets nothing: it fails at its deadline
            async with open_client([a.addresses["app"]]) as plain:
                ev = await plain.finish(1, b"inc", 1.0)
                assert not ev.ok and ev.latency >= 1.0
            assert sum(n.request_stats()["ok"] for n in (a, b)) == 10
