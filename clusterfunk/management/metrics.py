"""Prometheus metrics of one node, read from the node at scrape time.

:func:`make_registry` builds a :class:`prometheus_client.CollectorRegistry` of its own
(never the process-global one: several nodes may share a process) holding a
:class:`NodeCollector`, which reads a :class:`~.api.ManagedNode` on every scrape. No
background task samples anything: a scrape sees the node as it is at that moment.

The names are documented in docs/operations.md ("Metrics"); keep both in step.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusterfunk.management.api import ManagedNode

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
    "push_pulls": ("clusterfunk_gossip_push_pulls", "push-pull state exchanges"),
}
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
        yield CounterMetricFamily("clusterfunk_ack_timeouts",
                                  "reshard rounds that timed out waiting for acks (leader)",
                                  value=coord.get("ack timeouts", 0))
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
        ]
        for name, doc, key in families:
            fam = CounterMetricFamily(name, doc, labels=["protocol"])
            for proto in sorted(traffic):
                fam.add_metric([proto], int(traffic[proto].get(key, 0)))  # type: ignore[call-overload]
            yield fam


def make_registry(node: ManagedNode) -> CollectorRegistry:
    """A registry of its own with a :class:`NodeCollector` for ``node``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry
