"""/metrics of a real in-process node (loopback): the page parses with the Prometheus
text parser, and the counters move with what the node does -- a node that joins
makes a reshard (reshard counter, duration histogram on the leader), traffic and
transport counters grow, every TransportStats field is exported per port."""

from __future__ import annotations

import attrs
import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from clusterfunk.management.adapter import ClusterManaged
from clusterfunk.management.metrics import transport_metric
from clusterfunk.management.server import open_management_server
from clusterfunk.node import Cluster
from clusterfunk.runtime.net import TransportStats

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/metrics")
    assert r.status_code == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _v(m: Samples, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def _node(node_id: str, seeds: list[str]) -> Cluster:
    return Cluster(node_id, gossip_port=0, raft_port=0, coord_port=0, shards=60,
                   seeds=seeds)


async def _until(pred, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


@pytest.mark.slow
async def test_a_join_moves_the_reshard_traffic_and_transport_counters():
    async with _node("a", []) as a:
        await _until(lambda: a.state() == "operational" and a.nodes() == ["a"])
        async with open_management_server(ClusterManaged(a), "127.0.0.1:0",
                                           token=None) as server:
            before = await _scrape(server.url)
            assert _v(before, "clusterfunk_reshards_total") >= 1
            assert _v(before, "clusterfunk_node_role", role="leader") == 1
            led = _v(before, "clusterfunk_reshard_duration_seconds_count")
            assert led >= 1
            for field in attrs.fields(TransportStats):
                for port in ("gossip", "raft", "coord"):
                    assert (transport_metric(field.name) + "_total",
                            (("port", port),)) in before, field.name

            async with _node("b", [a.addresses["gossip"]]) as b:
                await _until(lambda: a.nodes() == ["a", "b"] and b.state() == "operational")
                after = await _scrape(server.url)

            def grew(name: str, **labels: str) -> bool:
                return _v(after, name, **labels) > _v(before, name, **labels)

            assert grew("clusterfunk_reshards_total")
            assert grew("clusterfunk_reshard_duration_seconds_count")
            assert _v(after, "clusterfunk_reshard_duration_seconds_count") == \
                _v(after, "clusterfunk_reshard_duration_seconds_bucket", le="+Inf")
            assert grew("clusterfunk_reshard_duration_seconds_sum")
            assert _v(after, "clusterfunk_cluster_nodes") == 2
            assert grew("clusterfunk_messages_received_total", protocol="raft")
            assert grew("clusterfunk_messages_received_total", protocol="coord")  # b's ack
            assert grew("clusterfunk_sent_bytes_total", protocol="gossip")
            assert grew("clusterfunk_transport_frames_received_total", port="raft")
            assert grew("clusterfunk_transport_received_bytes_total", port="gossip")
            assert grew("clusterfunk_transport_accepted_total", port="raft")
            # the values agree with the node's own counters
            k = a.coord.counters()
            assert _v(after, "clusterfunk_reshards_total") <= k.maps_committed
            assert _v(after, "clusterfunk_ack_timeouts_total") <= k.ack_timeouts
