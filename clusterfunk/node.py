"""The cluster API: one clusterfunk node on the real network (Trio).

::

    async with Cluster("node-a", bind_host="10.0.0.5", seeds=["10.0.0.4:7946"],
                       data_dir="/var/lib/cf", shards=10_000, voters=3) as cluster:
        cluster.set_endpoint("http", "10.0.0.5:8080")
        async for state, role in cluster.events():
            if state == "operational":
                owner = cluster.owner(12345)        # node id owning that key's shard

A node runs three drivers in one process (``docs/cluster.md``): gossip (port 7946),
Raft (8300) and the coordination core (8400, shard-map acks), joined by
:class:`clusterfunk.cluster.glue.NodeGlue`. The glue's pump runs in one task, woken
after every driver step that queued work for it, so no driver handler ever runs
inside another.

Without ``seeds`` (and unless ``bootstrap=False``) the node bootstraps a new
one-voter Raft cluster (on an empty store only); with seeds it joins through them
and waits for the leader to add it. Ports set to 0 are replaced by free ports
(probed for TCP and UDP at start; another process could take one in between).
``member=False`` makes a gossip-only client (role ``nonmember``): it can look up
endpoints but holds no shards.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

from clusterfunk.cluster import coordinator as co
from clusterfunk.cluster.glue import NodeGlue
from clusterfunk.cluster.statemachine import ClusterStateMachine
from clusterfunk.gossip.config import LAN, GossipConfig
from clusterfunk.gossip.core import GossipCore
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.errors import RaftError
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.runtime.net import free_port
from clusterfunk.runtime.trio_host import open_driver
from clusterfunk.sharding import ShardMap

GOSSIP_PORT = 7946
RAFT_PORT = 8300
COORD_PORT = co.PORT


class ClusterError(RuntimeError):
    """The cluster node is not running, or a request cannot be served."""


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _EventStream:
    """An async iterator of ``(state, role)`` with its own unbounded queue."""

    def __init__(self, cluster: Cluster) -> None:
        self._send, self._recv = trio.open_memory_channel[tuple[str, str]](math.inf)
        self._cluster = cluster

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._recv.__aiter__()

    async def receive(self) -> tuple[str, str]:
        return await self._recv.receive()

    def close(self) -> None:
        self._send.close()
        if self in self._cluster._streams:
            self._cluster._streams.remove(self)


class Cluster:
    """One clusterfunk node; use with ``async with`` (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        *,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        seeds: Sequence[str] = (),
        data_dir: str | os.PathLike[str] | None = None,
        shards: int | Sequence[int] | Sequence[float] = 10_000,
        voters: int = 3,
        gossip_port: int = GOSSIP_PORT,
        raft_port: int = RAFT_PORT,
        coord_port: int = COORD_PORT,
        bootstrap: bool | None = None,
        member: bool = True,
        service_name: str = "clusterfunk",
        gossip_config: GossipConfig = LAN,
        raft_config: RaftConfig | None = None,
        coord_config: co.CoordinatorConfig | None = None,
        tracer: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        if not node_id:
            raise ValueError("node_id must be a non-empty string")
        self.node_id = node_id
        self.bind_host = bind_host
        self.advertise_host = advertise_host or bind_host
        self.seeds = list(seeds)
        self.data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.shards = shards if isinstance(shards, int) else list(shards)
        ShardMap(self.shards)  # validates the weights now, not in the leader later
        self.voters = voters
        self.ports = [gossip_port, raft_port, coord_port]
        self.bootstrap = (not self.seeds) if bootstrap is None else bootstrap
        self.member = member
        self.service_name = service_name
        self.gossip_config = gossip_config
        self.raft_config = raft_config or RaftConfig()
        self.coord_config = coord_config
        self.tracer = tracer
        self.rng = rng if rng is not None else random.Random()
        self._endpoints: dict[str, str] = {}
        self._streams: list[_EventStream] = []
        self._stack: AsyncExitStack | None = None
        self._wake = trio.Event()
        self._glue: NodeGlue | None = None
        self.gossip_core: GossipCore | None = None
        self.raft_core: RaftCore | None = None
        self.coord: co.CoordinatorCore | None = None
        self.sm = ClusterStateMachine()
        self._drivers: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        host = self.advertise_host
        try:
            ports = [p if p else free_port(self.bind_host) for p in self.ports]
        except OSError as exc:
            raise ClusterError(str(exc)) from None
        gaddr, raddr, caddr = (_addr(host, p) for p in ports)
        self.addresses = {"gossip": gaddr, "raft": raddr, "coord": caddr}
        tags = {co.TAG_SERF: gaddr, co.TAG_MANAGEMENT: caddr, co.TAG_SERVICE: self.service_name}
        if self.member:
            tags[co.TAG_RAFT] = raddr
        self._tags = tags
        seed = self.rng.random

        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            self.gossip_core = GossipCore(
                self.node_id, gaddr, random.Random(seed()), self.gossip_config, self._all_tags()
            )
            if self.member:
                storage: Any
                if self.data_dir is not None:
                    from clusterfunk.raft.sqlite_store import SQLiteStorage

                    os.makedirs(self.data_dir, exist_ok=True)
                    storage = SQLiteStorage(os.path.join(self.data_dir, "raft.db"))
                    stack.callback(getattr(storage, "close", lambda: None))
                else:
                    storage = MemoryStorage()
                boot = {self.node_id: raddr} if self.bootstrap else None
                self.raft_core = RaftCore(
                    self.node_id,
                    storage,
                    self.sm,
                    random.Random(seed()),
                    config=self.raft_config,
                    bootstrap=boot,
                )
            cfg = self.coord_config or co.CoordinatorConfig(voters=self.voters)
            cfg = attrs.evolve(cfg, wall_offset=time.time() - trio.current_time())
            self.coord = co.CoordinatorCore(
                self.node_id,
                caddr,
                random.Random(seed()),
                raft=self.raft_core,
                gossip=self.gossip_core,
                sm=self.sm,
                weights=self.shards,
                config=cfg,
            )
            bind = self.bind_host
            d_coord = await stack.enter_async_context(
                open_driver(
                    self.node_id,
                    self.coord,
                    _addr(bind, ports[2]),
                    advertise=caddr,
                    tracer=self.tracer,
                )
            )
            d_raft = None
            if self.raft_core is not None:
                d_raft = await stack.enter_async_context(
                    open_driver(
                        self.node_id,
                        self.raft_core,
                        _addr(bind, ports[1]),
                        advertise=raddr,
                        tracer=self.tracer,
                    )
                )
            d_gossip = await stack.enter_async_context(
                open_driver(
                    self.node_id,
                    self.gossip_core,
                    _addr(bind, ports[0]),
                    advertise=gaddr,
                    tracer=self.tracer,
                    max_datagram=self.gossip_config.udp_buffer_size,
                )
            )
            self._drivers = {"coord": d_coord, "raft": d_raft, "gossip": d_gossip}
            glue = NodeGlue(d_coord, d_raft, d_gossip, self._defer)
            glue.on_state.append(self._on_state)
            self._glue = glue
            stack.callback(glue.close)
            nursery.start_soon(self._pump_task)
            glue.kick()
            seeds = [s for s in self.seeds if s != gaddr]
            if seeds:
                d_gossip.call(lambda core, now: core.join(now, seeds))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            with trio.move_on_after(2.0):
                await self._leave()
        finally:
            for s in list(self._streams):
                s.close()
            await stack.aclose()

    async def _leave(self) -> None:
        """Graceful stop: state ``stopping``, hand leadership over, leave gossip."""
        d = self._drivers
        d["coord"].call(lambda c, now: c.set_stopping(now))
        raft = d.get("raft")
        if raft is not None and self.raft_core is not None and self.raft_core.role == "leader":
            try:
                raft.call(lambda core, now: core.transfer_leadership(now))
            except RaftError:
                pass  # no other voter: nothing to hand over
            else:
                with trio.move_on_after(self.raft_config.election_timeout):
                    while self.raft_core.role == "leader":
                        await trio.sleep(0.01)
        if raft is not None:
            # ask the leader to remove us from Raft while we can still vote for it
            with trio.move_on_after(2 * self.raft_config.election_timeout):
                while not d["coord"].call(lambda c, now: c.request_leave(now)):
                    await trio.sleep(self.raft_config.heartbeat_interval)
        d["gossip"].call(lambda core, now: core.leave(now))
        with trio.move_on_after(5 * self.gossip_config.gossip_interval + 0.5):
            while d["gossip"].call(lambda core, now: core.pending_broadcasts()) > 0:
                await trio.sleep(self.gossip_config.gossip_interval / 2)

    def _defer(self, fn: Any) -> None:
        # the glue only ever defers its pump: wake the pump task
        self._wake.set()

    async def _pump_task(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._glue is not None:
                self._glue.pump()

    def _on_state(self, ev: co.StateChanged) -> None:
        for s in tuple(self._streams):
            try:
                s._send.send_nowait((ev.state, ev.role))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._streams.remove(s)

    def _running(self) -> None:
        if self._stack is None or self.coord is None:
            raise ClusterError(f"cluster node {self.node_id} is not running")

    # -- observable state ----------------------------------------------------------

    def state(self) -> str:
        """``invalid``, ``starting``, ``joining``, ``operational``, ``voting``,
        ``resharding`` or ``stopping``."""
        return self.coord.state if self.coord is not None else co.STARTING

    def role(self) -> str:
        """``unknown``, ``follower``, ``leader``, ``nonvoter`` or ``nonmember``."""
        return self.coord.role if self.coord is not None else co.UNKNOWN

    def leader(self) -> str | None:
        """The Raft leader's node id, when known."""
        return self.raft_core.leader_id if self.raft_core is not None else None

    def created(self) -> float | None:
        """Cluster creation time (Unix seconds), from the log's Bootstrap entry."""
        return self.sm.created

    def shard_map(self) -> ShardMap | None:
        """The committed shard map this node has applied (never a mere proposal)."""
        rec = self.coord.committed if self.coord is not None else None
        if rec is None:
            return None
        if self.sm.committed is not None and self.sm.committed.index == rec.index:
            return self.sm.committed_map()
        return ShardMap.decode(rec.blob)

    def nodes(self) -> list[str]:
        """The nodes of the committed shard map (the serving cluster), sorted."""
        rec = self.coord.committed if self.coord is not None else None
        return list(rec.nodes) if rec is not None else []

    def owner(self, key: int | str | bytes) -> str | None:
        """The node owning ``key``'s shard in the committed map (None without a map).
        Integer keys: ``key % shards``; strings and bytes: CRC-32 (docs/sharding.md)."""
        m = self.shard_map()
        if m is None:
            return None
        shard = m.shard_for_int(key) if isinstance(key, int) else m.shard_for_key(key)
        return m.lookup(shard)

    def members(self) -> list[Any]:
        """The gossip member list (every known member, with status and tags)."""
        return self.gossip_core.members() if self.gossip_core is not None else []

    def events(self) -> _EventStream:
        """Every later ``(state, role)`` change, in order, on its own unbounded queue
        (a slow reader costs memory, never an event). ``close()`` it when done."""
        s = _EventStream(self)
        self._streams.append(s)
        return s

    # -- endpoints -------------------------------------------------------------------

    def _all_tags(self) -> dict[str, str]:
        tags = dict(self._tags)
        for name, addr in self._endpoints.items():
            tags[f"ep.{name}"] = addr
        return tags

    def set_endpoint(self, name: str, address: str) -> None:
        """Publish endpoint ``name`` (tag ``ep.<name>``) to every member."""
        if not name or name in ("raft", "serf", "clusterfunk.management"):
            raise ValueError(f"reserved or empty endpoint name {name!r}")
        self._running()
        self._endpoints[name] = address
        tags = self._all_tags()
        self._drivers["gossip"].call(lambda core, now: core.set_tags(now, tags))

    def get_endpoint(self, node_id: str, name: str) -> str | None:
        """Endpoint ``name`` of member ``node_id`` (None if unknown)."""
        if self.gossip_core is None:
            return None
        m = self.gossip_core.member(node_id)
        if m is None:
            return None
        return m.tags.get(f"ep.{name}")
