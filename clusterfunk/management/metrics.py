"""Prometheus metrics of one node, read from the node at scrape time.

:func:`make_registry` builds a :class:`prometheus_client.CollectorRegistry` of its own
(never the process-global one: several nodes may share a process) holding a
:class:`NodeCollector`, which reads a :class:`~.api.ManagedNode` on every scrape. No
background task samples anything: a scrape sees the node as it is at that moment.

The names are documented in docs/operations.md ("Metrics"); keep both in step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from clusterfunk.management.api import ManagedNode
from clusterfunk.routing.api import Outcome

STATES = ("invalid", "starting", "joining", "operational", "voting", "resharding", "stopping")
ROLES = ("unknown", "follower", "leader", "nonvoter", "nonmember")
MEMBER_STATUSES = ("alive", "suspect", "dead", "left")

#: gossip core counter -> (metric name, help)
GOSSIP_COUNTERS = {
    "probes": ("clusterfunk_gossip_probes", "SWIM probes started by this node"),
    "probe_failures": ("clusterfunk_gossip_probe_failures",
                       "probes that got no ack (direct, indirect or TCP)"),
    "indirect": ("clusterfunk_gossip_indirect_probes", "indirect probes requested"),
    "nacks": ("clusterfunk_gossip_nacks", "Lifeguard nacks received"),
    "refutes": ("clusterfunk_gossip_refutations", "suspicions of this node it refuted"),
    "suspicions": ("clusterfunk_gossip_suspicions",
                   "members this node marked suspect (its own probes or gossip)"),
    "push_pulls": ("clusterfunk_gossip_push_pulls", "push-pull state exchanges"),
}
#: help texts of the transport counters (``clusterfunk_transport_<name>_total{port}``,
#: one per field of :class:`clusterfunk.runtime.net.TransportStats`)
TRANSPORT_HELP = {
    "datagrams_sent": "datagrams sent",
    "datagrams_received": "datagrams received",
    "datagrams_oversize": "datagrams refused: larger than the datagram limit",
    "datagrams_dropped": "datagrams dropped on send (socket buffer full, network error)",
    "frames_queued": "frames queued for sending",
    "frames_sent": "frames handed to the kernel",
    "frames_received": "frames received",
    "frames_dropped_queue_full": "frames dropped: the connection's queue was full",
    "frames_dropped_oversize": "frames refused: empty or larger than the frame limit",
    "frames_dropped_closed": "frames dropped: queued when the endpoint closed",
    "unresolvable": "sends to a destination that is not (yet) a usable address",
    "connects": "outgoing connections made",
    "connect_failures": "outgoing connections that failed",
    "disconnects": "outgoing connections lost",
    "idle_closed": "outgoing connections closed after being idle",
    "accepted": "incoming connections accepted",
    "rejected": "incoming connections refused: over the connection limit",
    "rejected_handshakes": "incoming connections refused: over the handshake limit",
    "evicted_idle": "idle incoming connections closed to make room",
    "evicted_per_peer": "a peer's oldest connection closed: over the per-peer limit",
    "budget_waits": "frames that waited for the shared memory budget",
    "frame_timeouts": "connections closed: a frame not complete in time (slow sender)",
    "bad_hello": "connections closed: bad hello",
    "bad_frame": "connections closed: bad frame header",
    "hello_timeouts": "connections closed: no TLS handshake + hello in time",
    "tls_failures": "TLS handshakes that failed (no or bad certificate)",
    "identity_mismatch": "TLS connections whose hello claims a name not in the certificate",
    "frames_dropped_identity": "frames dropped: sent with a false identity claim",
    "handler_errors": "errors raised by the transport's receive handler",
    "write_errors": "outgoing connections that broke mid-write (EPIPE, reset)",
    "peer_task_errors": "unexpected errors in a peer's writer task (a bug)",
    "serve_errors": "unexpected errors serving an incoming connection (a bug)",
    "bytes_sent": "bytes sent (datagrams and frames)",
    "bytes_received": "bytes received (datagrams and frames)",
}


def transport_metric(key: str) -> str:
    """The metric name of transport counter ``key`` (without ``_total``); byte counts
    end in ``_bytes`` (``bytes_sent`` -> ``clusterfunk_transport_sent_bytes``)."""
    if key.startswith("bytes_"):
        return f"clusterfunk_transport_{key[6:]}_bytes"
    return f"clusterfunk_transport_{key}"

#: gossip core counters of dropped input, exported as one metric with a ``reason`` label
GOSSIP_DROPS = ("malformed", "misdirected", "unknown_member", "stale", "invalid")


class NodeCollector(Collector):
    """Yields the node's metrics on every ``collect()`` (see docs/operations.md)."""

    def __init__(self, node: ManagedNode) -> None:
        self.node = node

    def describe(self) -> list[Metric]:
        return []  # names are dynamic (labels); nothing is collected at registration

    def collect(self) -> Iterator[Metric]:
        node = self.node
        st = node.status()
        members = node.members()
        raft = node.raft_info()
        diag = node.diag()
        c = node.counters()

        info = GaugeMetricFamily("clusterfunk_node_info", "this node (always 1)",
                                 labels=["node", "version"])
        info.add_metric([st["node"], st["version"]], 1)
        yield info
        yield GaugeMetricFamily("clusterfunk_uptime_seconds", "seconds since the node started",
                                value=st["uptime"])
        if st["created"] is not None:
            yield GaugeMetricFamily("clusterfunk_cluster_created_timestamp_seconds",
                                    "cluster creation time (Unix seconds, from the log)",
                                    value=st["created"])
        state = GaugeMetricFamily("clusterfunk_node_state",
                                  "1 for the node's current state, 0 for the others",
                                  labels=["state"])
        for s in STATES:
            state.add_metric([s], 1 if st["state"] == s else 0)
        yield state
        role = GaugeMetricFamily("clusterfunk_node_role",
                                 "1 for the node's current role, 0 for the others",
                                 labels=["role"])
        for r in ROLES:
            role.add_metric([r], 1 if st["role"] == r else 0)
        yield role
        yield GaugeMetricFamily("clusterfunk_cluster_nodes",
                                "nodes in the committed shard map", value=len(st["nodes"]))
        by_status = GaugeMetricFamily("clusterfunk_members",
                                      "gossip members known to this node, by status",
                                      labels=["status"])
        counts = dict.fromkeys(MEMBER_STATUSES, 0)
        for m in members:
            counts[m["status"]] = counts.get(m["status"], 0) + 1
        for s, n in counts.items():
            by_status.add_metric([s], n)
        yield by_status

        yield GaugeMetricFamily("clusterfunk_raft_term", "current Raft term", value=st["term"])
        yield GaugeMetricFamily("clusterfunk_raft_commit_index", "Raft commit index",
                                value=st["commit_index"])
        yield GaugeMetricFamily("clusterfunk_raft_applied_index", "last applied Raft index",
                                value=st["applied_index"])
        yield GaugeMetricFamily("clusterfunk_raft_voters", "voters in the Raft configuration",
                                value=len(raft["voters"]))
        yield GaugeMetricFamily("clusterfunk_raft_nonvoters",
                                "non-voters in the Raft configuration",
                                value=len(raft["nonvoters"]))

        yield GaugeMetricFamily("clusterfunk_shardmap_index",
                                "Raft index of the committed shard map (0: none)",
                                value=st["map_index"])
        yield GaugeMetricFamily("clusterfunk_owned_shards",
                                "shards this node owns in the committed map",
                                value=c["owned_shards"])
        yield GaugeMetricFamily("clusterfunk_owned_weight",
                                "total weight of the shards this node owns",
                                value=c["owned_weight"])
        yield GaugeMetricFamily("clusterfunk_quarantined_nodes",
                                "nodes left out of maps for a missed ack (leader)",
                                value=len(diag["quarantined"]))
        yield GaugeMetricFamily("clusterfunk_unresponsive_nodes",
                                "nodes left out of maps for stalled heartbeats (leader)",
                                value=len(diag["unresponsive"]))

        coord = c["coordinator"]
        rs = c.get("reshards")
        if rs is not None:
            yield CounterMetricFamily("clusterfunk_reshards",
                                      "committed shard maps this node applied",
                                      value=rs["committed"])
            hist = HistogramMetricFamily(
                "clusterfunk_reshard_duration_seconds",
                "reshard rounds this node led: proposal to applied commit (leader)")
            buckets: list[tuple[str, float]] = []
            total = 0
            for bound, n in zip([*rs["bounds"], math.inf], rs["counts"], strict=True):
                total += n
                buckets.append(("+Inf" if bound == math.inf else floatToGoString(bound),
                                total))
            hist.add_metric([], buckets, rs["seconds_sum"])
            yield hist
            yield CounterMetricFamily("clusterfunk_ack_timeouts",
                                      "reshard rounds that timed out waiting for acks "
                                      "(leader)", value=rs["ack_timeouts"])
            yield CounterMetricFamily("clusterfunk_quarantines",
                                      "nodes quarantined for a missed ack (leader)",
                                      value=rs["quarantines"])
        dropped = c.get("raft_dropped")
        if dropped is not None:
            fam = CounterMetricFamily("clusterfunk_raft_dropped_messages",
                                      "Raft messages the core dropped, by reason",
                                      labels=["reason"])
            for reason in sorted(dropped):
                fam.add_metric([reason], dropped[reason])
            yield fam
        events = CounterMetricFamily("clusterfunk_coordinator_events",
                                     "coordinator events counted by reason",
                                     labels=["event"])
        for name in sorted(coord):
            events.add_metric([name], coord[name])
        yield events

        gossip = c["gossip"]
        for key, (name, doc) in GOSSIP_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=gossip.get(key, 0))
        drops = CounterMetricFamily("clusterfunk_gossip_dropped",
                                    "gossip input dropped, by reason", labels=["reason"])
        for key in GOSSIP_DROPS:
            drops.add_metric([key], gossip.get(key, 0))
        yield drops

        traffic = c["traffic"]
        families = [
            ("clusterfunk_messages_received", "messages received (frames and datagrams)",
             "messages_in"),
            ("clusterfunk_messages_sent", "messages sent (frames and datagrams)", "messages_out"),
            ("clusterfunk_received_bytes", "bytes received", "bytes_in"),
            ("clusterfunk_sent_bytes", "bytes sent", "bytes_out"),
            ("clusterfunk_malformed_messages", "input dropped as malformed", "malformed"),
            ("clusterfunk_oversize_messages", "messages refused as oversized", "oversize"),
            ("clusterfunk_unauthorized_messages",
             "messages refused by the authorizer (identity, streams-only rules)",
             "unauthorized"),
            ("clusterfunk_handler_errors", "a core's message or timer handler raised",
             "handler_errors"),
            ("clusterfunk_stuck_timers", "a core's tick left its own deadline due (a core "
             "bug; the driver waits 10 ms instead of spinning)", "stuck_timers"),
        ]
        for name, doc, key in families:
            fam = CounterMetricFamily(name, doc, labels=["protocol"])
            for proto in sorted(traffic):
                fam.add_metric([proto], int(traffic[proto].get(key, 0)))  # type: ignore[call-overload]
            yield fam

        requests = c.get("requests")
        if requests:
            answers = CounterMetricFamily("clusterfunk_requests",
                                          "requests this node answered, by outcome",
                                          labels=["outcome"])
            for outcome in Outcome:
                answers.add_metric([outcome.value], requests.get(outcome.value, 0))
            yield answers
            events = CounterMetricFamily("clusterfunk_request_server_events",
                                         "request server counters other than answers "
                                         "(queued, forwarded, handoffs, dropped input)",
                                         labels=["event"])
            for name in sorted(set(requests) - {o.value for o in Outcome}):
                events.add_metric([name], requests[name])
            yield events

        transport = c.get("transport")
        if transport:
            names = sorted({k for per_port in transport.values() for k in per_port})
            for key in names:
                fam = CounterMetricFamily(transport_metric(key),
                                          TRANSPORT_HELP.get(key, f"transport counter {key}"),
                                          labels=["port"])
                for port in sorted(transport):
                    if key in transport[port]:
                        fam.add_metric([port], transport[port][key])
                yield fam


def make_registry(node: ManagedNode) -> CollectorRegistry:
    """A registry of its own with a :class:`NodeCollector` for ``node``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry
