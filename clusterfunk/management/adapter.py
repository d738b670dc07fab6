"""``ClusterManaged``: a :class:`clusterfunk.node.Cluster` seen as a
:class:`~.api.ManagedNode`.

It reads only the public names of ``Cluster`` (``node_id``, ``state()``, ``role()``,
``leader()``, ``created()``, ``shard_map()``, ``nodes()``, ``members()``,
``get_endpoint()``) and the public attributes of its cores (``raft_core``: term,
commit_index, last_applied, configuration, progress, role, leader_id, dropped;
``gossip_core``: members, stats, rtt_estimate; ``coord``: committed, quarantined,
unresponsive, stats, counters(), last_reshard). Writes call
``Cluster.transfer_leadership()``, ``Cluster.remove_node(id)`` and
``Cluster.set_voters(n)``; a ``Cluster`` without one of them answers ``501``. Traffic
counters come from ``Cluster.driver_stats()`` (protocol ->
:class:`~clusterfunk.runtime.driver.DriverStats`) and ``Cluster.transport_stats()``
(port -> :class:`~clusterfunk.runtime.net.TransportStats`) and request counters from
``Cluster.request_stats()`` when it has them.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import attrs

from clusterfunk import __version__
from clusterfunk.cluster.coordinator import RESHARD_BUCKETS
from clusterfunk.management.api import (
    MANAGEMENT_ENDPOINT,
    CountersView,
    DiagView,
    EndpointView,
    ManagementError,
    MemberView,
    NodeView,
    ProgressView,
    RaftView,
    ReshardCounters,
    ShardsView,
    StatusView,
    TrafficView,
)
from clusterfunk.management.console import ShardOwnersView, empty_owners, owners_view

_LIVE = ("alive", "suspect")

_RAFT_TAG = "ep.raft"


class ClusterManaged:
    """Implements :class:`~.api.ManagedNode` over a running ``Cluster``."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._started = time.monotonic()
        self._map_cache: tuple[int, Any] | None = None

    @property
    def node_id(self) -> str:
        return str(self.cluster.node_id)

    # -- helpers ---------------------------------------------------------------------

    def _map_record(self) -> Any:
        coord = self.cluster.coord
        return coord.committed if coord is not None else None

    def _map(self) -> Any:
        """The committed ShardMap (decoded once per map index)."""
        rec = self._map_record()
        if rec is None:
            return None
        if self._map_cache is None or self._map_cache[0] != rec.index:
            self._map_cache = (rec.index, self.cluster.shard_map())
        return self._map_cache[1]

    def _node_views(self, m: Any) -> list[NodeView]:
        if m is None:
            return []
        total = float(m.total_weight) or 1.0
        counts = m.counts()
        loads = m.loads()
        wids = m.worker_ids()
        return [
            NodeView(node=n, worker_id=wids[n], shards=counts[n], weight=float(loads[n]),
                     share=float(loads[n]) / total)
            for n in m.nodes
        ]

    # -- reads -----------------------------------------------------------------------

    def status(self) -> StatusView:
        c = self.cluster
        raft = c.raft_core
        rec = self._map_record()
        out = StatusView(
            node=self.node_id,
            state=str(c.state()),
            role=str(c.role()),
            leader=c.leader(),
            term=raft.term if raft is not None else 0,
            commit_index=raft.commit_index if raft is not None else 0,
            applied_index=raft.last_applied if raft is not None else 0,
            map_index=rec.index if rec is not None else 0,
            created=c.created(),
            uptime=time.monotonic() - self._started,
            version=__version__,
            nodes=list(c.nodes()),
        )
        join_error = getattr(c, "join_error", None)
        if join_error is not None:
            out["join_error"] = str(join_error)
        return out

    def nodes(self) -> list[NodeView]:
        return self._node_views(self._map())

    def members(self) -> list[MemberView]:
        gossip = self.cluster.gossip_core
        out: list[MemberView] = []
        for m in self.cluster.members():
            rtt = None
            if gossip is not None and m.name != self.node_id:
                rtt = gossip.rtt_estimate(self.node_id, m.name)
            out.append(MemberView(node=m.name, address=m.addr, status=str(m.status),
                                  incarnation=m.incarnation, tags=dict(sorted(m.tags.items())),
                                  rtt=rtt))
        return out

    def endpoints(self, name: str | None = None) -> list[EndpointView]:
        out: list[EndpointView] = []
        for m in self.cluster.members():
            if m.status not in _LIVE:
                continue
            for tag, addr in sorted(m.tags.items()):
                if not tag.startswith("ep."):
                    continue
                ep = tag[3:]
                if name is None or ep == name:
                    out.append(EndpointView(node=m.name, name=ep, address=addr))
        return out

    def endpoint_of(self, node: str, name: str) -> str | None:
        addr = self.cluster.get_endpoint(node, name)
        return str(addr) if addr else None

    def publish_management(self, address: str) -> None:
        """Publish this node's management API address as the endpoint
        ``clusterfunk.management`` (gossip tag ``ep.clusterfunk.management``)."""
        self.cluster.set_endpoint(MANAGEMENT_ENDPOINT, address)

    def shards(self) -> ShardsView:
        m = self._map()
        rec = self._map_record()
        return ShardsView(
            map_index=rec.index if rec is not None else 0,
            shards=m.n_shards if m is not None else 0,
            total_weight=float(m.total_weight) if m is not None else 0.0,
            nodes=self._node_views(m),
        )

    def raft_info(self) -> RaftView:
        raft = self.cluster.raft_core
        if raft is None:
            return RaftView(node=self.node_id, role="nonmember", term=0, leader=None,
                            commit_index=0, applied_index=0, voters={}, nonvoters={},
                            progress=[])
        progress: list[ProgressView] = []
        if str(raft.role) == "leader":
            for sid in sorted(raft.progress):
                p = raft.progress[sid]
                progress.append(ProgressView(node=sid, match=p.match, next=p.next,
                                             state=str(p.state)))
        cfg = raft.configuration
        return RaftView(
            node=self.node_id, role=str(raft.role), term=raft.term, leader=raft.leader_id,
            commit_index=raft.commit_index, applied_index=raft.last_applied,
            voters=dict(cfg.voters), nonvoters=dict(cfg.nonvoters), progress=progress,
        )

    def diag(self) -> DiagView:
        c = self.cluster
        members = {m.name: m for m in c.members()}
        live = {n for n, m in members.items() if m.status in _LIVE}
        raft = c.raft_core
        in_raft: set[str] = set(raft.configuration.members()) if raft is not None else set()
        in_map = set(c.nodes())
        coord = c.coord
        quarantined = sorted(coord.quarantined) if coord is not None else []
        unresponsive = sorted(coord.unresponsive) if coord is not None else []
        raft_not_live = sorted(in_raft - live)
        live_not_raft = sorted(
            n for n in live if _RAFT_TAG in members[n].tags and n not in in_raft
        ) if raft is not None else []
        map_not_raft = sorted(in_map - in_raft) if raft is not None else []
        raft_not_map = sorted(in_raft - in_map) if in_map else []
        problems: list[str] = []
        if str(c.state()) == "invalid":
            problems.append("this node is in state invalid")
        if raft is not None and c.leader() is None:
            problems.append("no Raft leader known")
        for n in raft_not_live:
            st = members[n].status if n in members else "unknown to gossip"
            problems.append(f"Raft member {n} is {st}")
        for n in live_not_raft:
            problems.append(f"live member {n} (with {_RAFT_TAG}) is not in Raft")
        for n in map_not_raft:
            problems.append(f"map node {n} is not in the Raft configuration")
        for n in raft_not_map:
            problems.append(f"Raft member {n} holds no shards in the committed map")
        for n in quarantined:
            problems.append(f"{n} is quarantined (missed an ack)")
        for n in unresponsive:
            problems.append(f"{n} is unresponsive (heartbeat echoes stalled)")
        rec = self._map_record()
        last = None
        if rec is not None:
            last = {"index": rec.index, "term": rec.term, "leader": rec.leader,
                    "nodes": list(rec.nodes), "moved": rec.moved, "digest": rec.digest,
                    "why": self._why(rec.index)}
        return DiagView(
            node=self.node_id, ok=not problems, problems=problems,
            raft_members_not_live=raft_not_live, live_not_in_raft=live_not_raft,
            map_not_in_raft=map_not_raft, raft_not_in_map=raft_not_map,
            quarantined=quarantined, unresponsive=unresponsive, last_reshard=last,
        )

    def _why(self, index: int) -> str:
        """Why the committed map at ``index`` was made, as far as this node saw it."""
        coord = self.cluster.coord
        info = coord.last_reshard if coord is not None else None
        if info is None or info.index != index:
            return "unknown (committed before this node started)"
        if info.first:
            return "first map of the cluster"
        parts = []
        if info.added:
            parts.append("added " + ", ".join(info.added))
        if info.removed:
            parts.append("removed " + ", ".join(info.removed))
        return "; ".join(parts) if parts else "same nodes (a new leader's reshard)"

    def counters(self) -> CountersView:
        c = self.cluster
        traffic: dict[str, TrafficView] = {}
        driver_stats = getattr(c, "driver_stats", None)
        if callable(driver_stats):
            for proto, s in sorted(driver_stats().items()):
                traffic[proto] = TrafficView(
                    messages_in=s.frames_in + s.datagrams_in,
                    messages_out=s.frames_out + s.datagrams_out,
                    bytes_in=s.bytes_in, bytes_out=s.bytes_out,
                    malformed=s.malformed, oversize=s.oversize,
                    unauthorized=getattr(s, "unauthorized", 0),
                    handler_errors=getattr(s, "handler_errors", 0),
                    stuck_timers=getattr(s, "stuck_timers", 0),
                )
        gossip = dict(c.gossip_core.stats) if c.gossip_core is not None else {}
        coord = dict(c.coord.stats) if c.coord is not None else {}
        m = self._map()
        me = self.node_id
        owned_shards = m.counts().get(me, 0) if m is not None else 0
        owned_weight = float(m.loads().get(me, 0)) if m is not None else 0.0
        out = CountersView(traffic=traffic, gossip=gossip, coordinator=coord,
                           owned_weight=owned_weight, owned_shards=owned_shards)
        if c.coord is not None:
            k = c.coord.counters()
            out["reshards"] = ReshardCounters(
                committed=k.maps_committed, led=k.reshards_led,
                bounds=list(RESHARD_BUCKETS), counts=list(k.reshard_seconds),
                seconds_sum=k.reshard_seconds_sum, ack_timeouts=k.ack_timeouts,
                quarantines=k.quarantines)
        if c.raft_core is not None:
            out["raft_dropped"] = dict(sorted(c.raft_core.dropped.items()))
        transport_stats = getattr(c, "transport_stats", None)
        if callable(transport_stats):
            out["transport"] = {port: attrs.asdict(st) for port, st in
                                sorted(transport_stats().items())}
        requests = self.request_stats()
        if requests:
            out["requests"] = dict(sorted(requests.items()))
        return out

    # -- console reads (management/console.py) ---------------------------------------

    def shard_owners(self) -> ShardOwnersView:
        rec = self._map_record()
        return owners_view(rec.index, self._map()) if rec is not None else empty_owners()

    def request_stats(self) -> dict[str, int] | None:
        """``Cluster.request_stats()`` (routed requests by outcome), or None if the
        Cluster has no request layer (no such method, or its counters are empty: it
        runs no service)."""
        fn = getattr(self.cluster, "request_stats", None)
        stats = dict(fn()) if callable(fn) else {}
        return stats or None

    # -- writes ----------------------------------------------------------------------

    async def _call(self, method: str, *args: Any) -> None:
        fn = getattr(self.cluster, method, None)
        if fn is None:
            raise ManagementError(501, f"this node's Cluster has no {method}() yet")
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except ManagementError:
            raise
        except ValueError as exc:
            raise ManagementError(400, str(exc)) from None
        except Exception as exc:  # ClusterError, RaftError: refused in this state
            raise ManagementError(409, f"{method} failed: {exc}") from None

    async def step_down(self) -> None:
        await self._call("transfer_leadership")

    async def remove_node(self, node: str) -> None:
        await self._call("remove_node", node)

    async def set_voters(self, n: int) -> None:
        await self._call("set_voters", n)
