"""Gossip configuration: memberlist's LAN / WAN / Local profiles plus Serf's knobs.

Every duration is in seconds of the node's local clock. The three profiles carry
memberlist's published defaults (see ``/work/shared/reference/protocols.md``);
the Serf-level values (reap, tombstones, queries, events) follow Serf's defaults
except where a shorter value is only practical in tests (they override them).
"""

from __future__ import annotations

import math

import attrs


@attrs.frozen
class GossipConfig:
    """All tunables of one gossip node (immutable; derive variants with ``attrs.evolve``)."""

    #: SWIM protocol period: one member is probed per interval.
    probe_interval: float = 1.0
    #: How long a direct ping waits for its ack before indirect probes start.
    probe_timeout: float = 0.5
    #: Suspicion min timeout = suspicion_mult x max(1, log10 n) x probe_interval.
    suspicion_mult: int = 4
    #: Lifeguard: suspicion max timeout = this x the min timeout.
    suspicion_max_timeout_mult: int = 6
    #: Retransmit limit of a broadcast = retransmit_mult x ceil(log10(n + 1)).
    retransmit_mult: int = 4
    #: Every gossip_interval, pending broadcasts go to gossip_nodes random members.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    #: Full-state anti-entropy over the stream channel (scaled up above 32 members).
    push_pull_interval: float = 30.0
    #: Members asked to ping a target indirectly (ping-req) after a missed ack.
    indirect_checks: int = 3
    #: Dead / left members keep receiving gossip for this long.
    gossip_to_the_dead_time: float = 30.0
    #: Lifeguard local health: score in 0 .. awareness_max_multiplier - 1.
    awareness_max_multiplier: int = 8
    #: Datagram budget (bytes) for one packet including piggybacked gossip.
    udp_buffer_size: int = 1400
    #: Bytes kept free in every datagram for an envelope added by the codec
    #: (the keyring's version byte, nonce and tag).
    packet_overhead: int = 64

    # -- Serf layer ------------------------------------------------------------
    #: Largest encoded tag map (memberlist's node meta limit).
    tags_max_bytes: int = 512
    #: A failed member is reaped (forgotten) after this long.
    reconnect_timeout: float = 24 * 3600.0
    #: A member that left is kept as a tombstone for this long.
    tombstone_timeout: float = 24 * 3600.0
    #: How often the reaper runs.
    reap_interval: float = 15.0
    #: How often a failed member is contacted again (push-pull) to heal partitions.
    reconnect_interval: float = 30.0
    #: Query timeout = gossip_interval x query_timeout_mult x ceil(log10(n + 1)).
    query_timeout_mult: int = 16
    #: Largest user event payload + name (bytes).
    user_event_size_limit: int = 512
    #: Largest query payload + name, and largest response payload (bytes).
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    #: Recent Lamport times remembered to de-duplicate events and queries.
    event_buffer_size: int = 512
    query_buffer_size: int = 512
    #: Events marked ``coalesce`` are held this long and only the latest per name is
    #: delivered (0 disables; Serf's default).
    user_coalesce_period: float = 0.0
    #: Join attempts through seeds are retried until one answers.
    join_retry_interval: float = 2.0
    join_max_attempts: int = 10
    #: Cap on queued broadcasts (the oldest, most transmitted are dropped first).
    max_broadcasts: int = 4096
    #: planted bugs switched on (:mod:`clusterfunk.mutants`); only the simulator sets it.
    mutants: frozenset[str] = frozenset()


#: memberlist's DefaultLANConfig.
LAN = GossipConfig()

#: memberlist's DefaultWANConfig.
WAN = attrs.evolve(
    LAN,
    probe_interval=5.0,
    probe_timeout=3.0,
    suspicion_mult=6,
    retransmit_mult=4,
    gossip_interval=0.5,
    gossip_nodes=4,
    push_pull_interval=60.0,
    indirect_checks=3,
    gossip_to_the_dead_time=60.0,
)

#: memberlist's DefaultLocalConfig (loopback / one host).
LOCAL = attrs.evolve(
    LAN,
    probe_interval=1.0,
    probe_timeout=0.2,
    suspicion_mult=3,
    retransmit_mult=2,
    gossip_interval=0.1,
    gossip_nodes=3,
    push_pull_interval=15.0,
    indirect_checks=1,
    gossip_to_the_dead_time=15.0,
)

PROFILES: dict[str, GossipConfig] = {"lan": LAN, "wan": WAN, "local": LOCAL}


def profile(name: str) -> GossipConfig:
    """The named profile (``lan``, ``wan`` or ``local``); ValueError otherwise."""
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown gossip profile {name!r}; choose lan, wan or local") from None


def retransmit_limit(mult: int, n: int) -> int:
    """Rule (memberlist retransmitLimit): an update is sent retransmit_mult x
    ceil(log10(n + 1)) times, n being the number of members."""
    return mult * math.ceil(math.log10(max(n, 0) + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """Rule (memberlist pushPullScale): above 32 members the push-pull interval grows
    with log2(n) so that the cluster-wide stream load stays bounded."""
    threshold = 32
    if n <= threshold:
        return interval
    mult = math.ceil(math.log2(n) - math.log2(threshold)) + 1.0
    return interval * mult


def query_timeout(config: GossipConfig, n: int) -> float:
    """Rule (Serf DefaultQueryTimeout): gossip_interval x query_timeout_mult x
    ceil(log10(n + 1))."""
    return config.gossip_interval * config.query_timeout_mult * math.ceil(math.log10(n + 1))
