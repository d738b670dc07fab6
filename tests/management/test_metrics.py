"""/metrics parses with the Prometheus text parser and its values match the node."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from clusterfunk.management.metrics import make_registry
from tests.management.fake import FakeNode


async def _scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(verify=False) as c:
        r = await c.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _v(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_match_the_node_status(server, fake):
    m = await _scrape(server)
    st = fake.status()
    assert _v(m, "clusterfunk_node_info", node="a", version=st["version"]) == 1
    assert _v(m, "clusterfunk_raft_term") == st["term"]
    assert _v(m, "clusterfunk_raft_commit_index") == st["commit_index"]
    assert _v(m, "clusterfunk_raft_applied_index") == st["applied_index"]
    assert _v(m, "clusterfunk_shardmap_index") == st["map_index"]
    assert _v(m, "clusterfunk_cluster_nodes") == len(st["nodes"])
    assert _v(m, "clusterfunk_uptime_seconds") == st["uptime"]
    assert _v(m, "clusterfunk_cluster_created_timestamp_seconds") == st["created"]
    assert _v(m, "clusterfunk_node_state", state="operational") == 1
    assert sum(v for (n, _l), v in m.items() if n == "clusterfunk_node_state") == 1
    assert _v(m, "clusterfunk_node_role", role="leader") == 1
    assert _v(m, "clusterfunk_node_role", role="follower") == 0
    # members by status: the fake has 2 alive, 1 suspect, 1 dead
    assert [_v(m, "clusterfunk_members", status=s) for s in ("alive", "suspect", "dead", "left")] \
        == [2, 1, 1, 0]
    assert _v(m, "clusterfunk_raft_voters") == 2
    assert _v(m, "clusterfunk_raft_nonvoters") == 1
    assert _v(m, "clusterfunk_owned_shards") == 34
    assert _v(m, "clusterfunk_owned_weight") == 34.0
    assert _v(m, "clusterfunk_quarantined_nodes") == 1


async def test_counters_are_exported_with_their_labels(server):
    m = await _scrape(server)
    assert _v(m, "clusterfunk_ack_timeouts_total") == 4
    assert _v(m, "clusterfunk_coordinator_events_total", event="stale ack") == 2
    assert _v(m, "clusterfunk_gossip_probes_total") == 9
    assert _v(m, "clusterfunk_gossip_refutations_total") == 1
    assert _v(m, "clusterfunk_gossip_probe_failures_total") == 0
    assert _v(m, "clusterfunk_gossip_dropped_total", reason="malformed") == 3
    assert _v(m, "clusterfunk_messages_received_total", protocol="gossip") == 10
    assert _v(m, "clusterfunk_messages_sent_total", protocol="gossip") == 11
    assert _v(m, "clusterfunk_received_bytes_total", protocol="gossip") == 1000
    assert _v(m, "clusterfunk_sent_bytes_total", protocol="gossip") == 1100
    assert _v(m, "clusterfunk_malformed_messages_total", protocol="gossip") == 2
    assert _v(m, "clusterfunk_oversize_messages_total", protocol="gossip") == 1
    assert _v(m, "clusterfunk_handler_errors_total", protocol="gossip") == 0
    assert _v(m, "clusterfunk_gossip_suspicions_total") == 5


async def test_reshards_quarantines_raft_drops_and_transport_counters(server):
    m = await _scrape(server)
    assert _v(m, "clusterfunk_reshards_total") == 6
    # the histogram: cumulative buckets, +Inf = count = rounds led
    assert _v(m, "clusterfunk_reshard_duration_seconds_bucket", le="0.5") == 1
    assert _v(m, "clusterfunk_reshard_duration_seconds_bucket", le="1.0") == 1
    assert _v(m, "clusterfunk_reshard_duration_seconds_bucket", le="+Inf") == 3
    assert _v(m, "clusterfunk_reshard_duration_seconds_count") == 3
    assert _v(m, "clusterfunk_reshard_duration_seconds_sum") == 7.25
    assert _v(m, "clusterfunk_ack_timeouts_total") == 4
    assert _v(m, "clusterfunk_quarantines_total") == 5
    assert _v(m, "clusterfunk_raft_dropped_messages_total", reason="stale term") == 8
    assert _v(m, "clusterfunk_raft_dropped_messages_total", reason="unknown server") == 1
    assert _v(m, "clusterfunk_transport_datagrams_received_total", port="gossip") == 12
    assert _v(m, "clusterfunk_transport_datagrams_received_total", port="raft") == 0
    assert _v(m, "clusterfunk_transport_sent_bytes_total", port="raft") == 900
    assert _v(m, "clusterfunk_requests_total", outcome="ok") == 20
    assert _v(m, "clusterfunk_requests_total", outcome="moved") == 3
    assert _v(m, "clusterfunk_requests_total", outcome="error") == 0
    assert _v(m, "clusterfunk_request_server_events_total", event="queued") == 2
    assert _v(m, "clusterfunk_request_server_events_total", event="handoff_timeouts") == 1
    assert ("clusterfunk_request_server_events_total", (("event", "ok"),)) not in m


async def test_values_are_read_at_scrape_time_and_requests_are_counted(server, fake):
    first = await _scrape(server)
    fake.term = 12
    fake.map_nodes = ["a", "b"]
    second = await _scrape(server)
    assert _v(first, "clusterfunk_raft_term") == 7
    assert _v(second, "clusterfunk_raft_term") == 12
    assert _v(second, "clusterfunk_cluster_nodes") == 2
    assert _v(second, "clusterfunk_management_requests_total", route="/metrics", code="200") == 1


def test_each_registry_is_its_own():
    a, b = make_registry(FakeNode("a")), make_registry(FakeNode("b"))
    assert a.get_sample_value("clusterfunk_node_info", {"node": "a", "version": "0.1.0"}) == 1
    assert b.get_sample_value("clusterfunk_node_info", {"node": "a", "version": "0.1.0"}) is None
