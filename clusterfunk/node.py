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
:class:`clusterfunk.cluster.glue.NodeGlue`. They are wired by
:class:`clusterfunk.cluster.assembly.ClusterNode`, the same assembly the simulator
runs, on a :class:`~clusterfunk.runtime.trio_host.TrioHost`; the glue's pump runs
as deferred work of the host, after the driver step that queued it, so no driver
handler ever runs inside another.

Without ``seeds`` (and unless ``bootstrap=False``) the node bootstraps a new
one-voter Raft cluster (on an empty store only); with seeds it joins through them
and waits for the leader to add it. Ports set to 0 are bound to free ports
before anything else starts (no probing, no race).
``member=False`` makes a gossip-only client (role ``nonmember``): it can look up
endpoints but holds no shards; it fetches the committed map from a member's
request server (found through the gossip tag ``ep.clusterfunk.requests``), so
``shard_map()``/``owner()``/``nodes()`` work on it too.

Requests (docs/routing.md): ``service=`` (a
:class:`~clusterfunk.routing.api.ShardService`) makes a member run the request
server on ``app_port`` (default 8600): it serves the shards this node owns,
answers ``moved`` (or forwards, ``forward=ForwardMode.FORWARD``) for the others,
queues requests for shards in handoff, and hands shard state over on release.
Clients: :func:`clusterfunk.routing.trio_client.open_client`.

Security (docs/operations.md): ``tls=load_tls_dir(dir, node_id)`` runs mutual TLS
on the Raft, coordination and request (``app``) ports, and then every Raft or coordination message
is accepted only from the node its certificate names (and Raft only from servers
of the configuration); ``keyring=`` seals every gossip packet (the gossip port
stays reachable by gossip-only clients that hold the key).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

from clusterfunk.cluster import coordinator as co
from clusterfunk.cluster.assembly import DEFAULT_PORTS, ClusterNode
from clusterfunk.cluster.statemachine import ClusterStateMachine
from clusterfunk.gossip.config import LAN, GossipConfig
from clusterfunk.gossip.core import GossipCore
from clusterfunk.gossip.keyring import Keyring
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.errors import NotLeader, RaftError
from clusterfunk.raft.roles import Role
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.routing.api import APP, ForwardMode, ShardService
from clusterfunk.routing.server import ServerConfig
from clusterfunk.runtime.api import Persister
from clusterfunk.runtime.events import EventHub, EventStream
from clusterfunk.runtime.host import COORD, GOSSIP, RAFT
from clusterfunk.runtime.net import TransportStats
from clusterfunk.runtime.persist import open_persister
from clusterfunk.runtime.tls import TLSConfig
from clusterfunk.runtime.trio_host import TrioHost, open_host, wait_until
from clusterfunk.sharding import ShardMap

GOSSIP_PORT = DEFAULT_PORTS[GOSSIP]
RAFT_PORT = DEFAULT_PORTS[RAFT]
COORD_PORT = DEFAULT_PORTS[COORD]
APP_PORT = DEFAULT_PORTS[APP]


#: the first wait before joining again after gossip gave up; doubles up to the max
JOIN_RETRY = 1.0
JOIN_RETRY_MAX = 30.0

log = logging.getLogger("clusterfunk.node")


class ClusterError(RuntimeError):
    """The cluster node is not running, or a request cannot be served."""


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        tls: TLSConfig | None = None,
        keyring: Keyring | None = None,
        encrypt: bool = True,
        on_release: Callable[[frozenset[int]], Awaitable[None]] | None = None,
        release_timeout: float = 5.0,
        service: ShardService | None = None,
        app_port: int | None = None,
        forward: ForwardMode = ForwardMode.MOVED,
        server_config: ServerConfig | None = None,
        resolve_seeds: Callable[[], Awaitable[Sequence[str]]] | None = None,
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
        if service is not None and not member:
            raise ValueError("a nonmember (member=False) serves no shards: it takes no service")
        self.service = service
        self.server_config = attrs.evolve(server_config or ServerConfig(), forward=forward)
        if app_port is None:  # a nonmember's map client only receives answers
            app_port = APP_PORT if service is not None else 0
        self.ports = {GOSSIP: gossip_port, RAFT: raft_port, COORD: coord_port, APP: app_port}
        self.bootstrap = (not self.seeds) if bootstrap is None else bootstrap
        self.member = member
        self.service_name = service_name
        self.gossip_config = gossip_config
        self.raft_config = raft_config or RaftConfig()
        self.coord_config = coord_config
        self.tracer = tracer
        self.rng = rng if rng is not None else random.Random()
        self.tls = tls
        self.keyring = keyring
        self.encrypt = encrypt
        self.addresses: dict[str, str] = {}
        self._endpoints: dict[str, str] = {}
        self._events: EventHub[tuple[str, str]] = EventHub()
        self._stack: AsyncExitStack | None = None
        self._host: TrioHost | None = None
        self.node: ClusterNode | None = None
        self.sm = ClusterStateMachine()
        self._init_ownership(on_release, release_timeout)
        self._init_joining(resolve_seeds)

    # -- the parts (read-only views for tools: management API, tests) ---------------

    @property
    def gossip_core(self) -> GossipCore | None:
        return self.node.gossip if self.node is not None else None

    @property
    def raft_core(self) -> RaftCore | None:
        return self.node.raft if self.node is not None else None

    @property
    def coord(self) -> co.CoordinatorCore | None:
        return self.node.coord if self.node is not None else None

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        names = [GOSSIP, COORD] + ([RAFT] if self.member else [])
        if self.service is not None or not self.member:
            names.append(APP)
        binds = {n: _addr(self.bind_host, self.ports[n]) for n in names}
        advertise = {n: _addr(self.advertise_host, self.ports[n]) for n in names}
        seed = self.rng.random
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._open_release_tasks(stack)  # exits after the host (LIFO)
            # Exit order (LIFO): the host stops the drivers, then the persister writes
            # what is still queued, then the storage closes.
            storage: Any = None
            persister: Persister | None = None
            if self.member:
                if self.data_dir is not None:
                    from clusterfunk.raft.sqlite_store import SQLiteStorage

                    os.makedirs(self.data_dir, exist_ok=True)
                    storage = SQLiteStorage(os.path.join(self.data_dir, "raft.db"))
                    stack.callback(storage.close)
                    # the SQLite commit (fsync) runs in a worker thread: gossip and
                    # coordination never wait on the disk
                    persister = await stack.enter_async_context(open_persister(storage))
                else:
                    storage = MemoryStorage()
            try:
                host = await stack.enter_async_context(
                    open_host(
                        self.node_id,
                        binds,
                        advertise=advertise,
                        max_datagram={GOSSIP: self.gossip_config.udp_buffer_size},
                        tracer=self.tracer,
                        rng=random.Random(seed()),
                        tls=self.tls,
                        tls_ports=(RAFT, COORD, APP) if self.tls is not None else (),
                    )
                )
            except OSError as exc:
                raise ClusterError(f"{self.node_id}: cannot bind: {exc}") from None
            self._host = host
            self.addresses = {n: host.address(n) for n in names}
            boot = {self.node_id: host.address(RAFT)} if self.bootstrap and self.member else None
            node = ClusterNode(
                host,
                storage=storage,
                persister=persister,
                rng=lambda _what: random.Random(seed()),
                weights=self.shards,
                gossip_config=self.gossip_config,
                raft_config=self.raft_config,
                coord_config=self.coord_config or co.CoordinatorConfig(voters=self.voters),
                bootstrap=boot,
                member=self.member,
                seeds=self.seeds,
                service_name=self.service_name,
                tags=self._endpoint_tags(),
                keyring=self.keyring,
                encrypt=self.encrypt,
                service=self.service,
                server_config=self.server_config,
            )
            self.sm = node.sm
            node.glue.on_state.append(self._on_state)
            self._wire_ownership(node)
            self.node = node
            host.start()
            await self._start_joining(stack)  # exits before the host (LIFO)
        except BaseException:
            self.node = None
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
            self._events.close()
            self._ownership.close()
            await stack.aclose()

    async def _leave(self) -> None:
        """Graceful stop: state ``stopping``, hand leadership over, leave gossip."""
        node = self.node
        assert node is not None
        node.coord_driver.call(lambda c, now: c.set_stopping(now))
        raft = node.raft_driver
        if raft is not None and node.raft is not None and node.raft.role is Role.LEADER:
            try:
                raft.call(lambda core, now: core.transfer_leadership(now))
            except RaftError:
                pass  # no other voter: nothing to hand over
            else:
                with trio.move_on_after(self.raft_config.election_timeout):
                    await self._wait_state(
                        lambda: node.raft is None or node.raft.role is not Role.LEADER
                    )
        if raft is not None:
            # ask the leader to remove us from Raft while we can still vote for it
            with trio.move_on_after(2 * self.raft_config.election_timeout):
                while not node.coord_driver.call(lambda c, now: c.request_leave(now)):
                    await trio.sleep(self.raft_config.heartbeat_interval)
        node.gossip_driver.call(lambda core, now: core.leave(now))
        gossip = node.gossip
        with trio.move_on_after(5 * self.gossip_config.gossip_interval + 0.5):
            await wait_until([node.gossip_driver], lambda: gossip.pending_broadcasts() == 0)

    async def _wait_state(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` holds, re-checked after every step of any driver."""
        node = self.node
        assert node is not None
        await wait_until([d for d in node.drivers.values() if d is not None], done)

    def _on_state(self, ev: co.StateChanged) -> None:
        self._events.publish((ev.state, ev.role))

    def _running(self) -> ClusterNode:
        if self._stack is None or self.node is None:
            raise ClusterError(f"cluster node {self.node_id} is not running")
        return self.node

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
        """The committed shard map this node has applied (never a mere proposal); on a
        nonmember, the committed map it fetched from a member (None until then)."""
        rec = self.coord.committed if self.coord is not None else None
        if rec is None:
            mc = self.node.map_client if self.node is not None else None
            return mc.map if mc is not None else None  # a nonmember: fetched from a member
        if self.sm.committed is not None and self.sm.committed.index == rec.index:
            return self.sm.committed_map()
        return ShardMap.decode(rec.blob)

    def nodes(self) -> list[str]:
        """The nodes of the committed shard map (the serving cluster), sorted."""
        rec = self.coord.committed if self.coord is not None else None
        if rec is None:
            m = self.shard_map()  # a nonmember's fetched map
            return sorted(m.nodes) if m is not None else []
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

    def events(self) -> EventStream[tuple[str, str]]:
        """Every later ``(state, role)`` change, in order, on its own unbounded queue
        (a slow reader costs memory, never an event). Use ``async with`` or
        ``close()`` it when done; it ends when the node stops."""
        return self._events.subscribe()

    # -- operations ------------------------------------------------------------------

    async def transfer_leadership(self, target: str | None = None) -> str:
        """Hand Raft leadership from this node (the leader) to ``target`` or the most
        up-to-date voter; returns the new leader's id once this node sees it. Raises
        :class:`~clusterfunk.raft.errors.NotLeader` on a follower, and
        :class:`~clusterfunk.raft.errors.RaftError` when there is no other voter.
        Bound it with ``trio.fail_after``."""
        node = self._running()
        if node.raft_driver is None or node.raft is None:
            raise ClusterError(f"{self.node_id} is not a Raft member")
        node.raft_driver.call(lambda core, now: core.transfer_leadership(now, target))
        raft = node.raft
        await self._wait_state(
            lambda: raft.leader_id is not None and raft.leader_id != self.node_id
        )
        assert raft.leader_id is not None
        return raft.leader_id

    async def remove_node(self, node_id: str) -> None:
        """Remove ``node_id`` from the cluster (on the leader; a follower raises
        :class:`~clusterfunk.raft.errors.NotLeader` naming the leader): the leader
        removes it from Raft and keeps it out of Raft and the map while gossip still
        reports it alive (a killed node, until it is declared dead). Returns once
        neither the Raft configuration nor the committed map has it. Bound it with
        ``trio.fail_after``."""
        node = self._running()
        raft = node.raft
        if raft is None:
            raise ClusterError(f"{self.node_id} is not a Raft member")
        if not node.coord_driver.call(lambda c, now: c.remove_member(now, node_id)):
            raise NotLeader(raft.leader_id, raft.leader_address)
        await self._wait_state(
            lambda: node_id not in raft.configuration.members() and node_id not in self.nodes()
        )

    async def set_voters(self, voters: int) -> None:
        """Keep ``voters`` Raft voters from now on (on the leader; a follower raises
        :class:`~clusterfunk.raft.errors.NotLeader`). The target goes into the Raft log,
        so every node applies it and a later leader keeps it too (instead of its own
        ``voters`` setting). The leader promotes or demotes one member at a time;
        returns once the target is applied here and the configuration has that many
        voters (or every member is a voter). Bound it with ``trio.fail_after``."""
        if voters < 1:
            raise ValueError("voters must be >= 1")
        node = self._running()
        raft = node.raft
        coord = node.coord
        if raft is None:
            raise ClusterError(f"{self.node_id} is not a Raft member")
        if not node.coord_driver.call(lambda c, now: c.set_voter_target(now, voters)):
            raise NotLeader(raft.leader_id, raft.leader_address)
        await self._wait_state(
            lambda: coord.voter_target == voters
            and len(raft.configuration.voters) == min(voters, len(raft.configuration.members()))
        )

    def request_stats(self) -> dict[str, int]:
        """Request server counters (empty without a service): answers by outcome
        (``ok``, ``moved``, ``busy``, ``error``), ``queued``, ``forwarded``,
        handoffs (``handoffs_sent``, ``handoffs_received``, ``handoff_timeouts``,
        ``late_handoffs``, ``handoff_ack_timeouts``) and dropped input
        (``malformed``, ``stale_replies``); see docs/routing.md."""
        node = self.node
        if node is None or node.routing is None:
            return {}
        return dict(node.routing.stats)

    def map_index(self) -> int:
        """Raft index of the committed map this node uses (0: none yet)."""
        rec = self.coord.committed if self.coord is not None else None
        if rec is not None:
            return rec.index
        mc = self.node.map_client if self.node is not None else None
        return mc.index if mc is not None else 0

    def driver_stats(self) -> dict[str, Any]:
        """Per protocol (``gossip``, ``raft``, ``coord``): the driver's counters
        (messages and bytes in and out, malformed, oversize, unauthorized, ...)."""
        node = self.node
        if node is None:
            return {}
        return {name: d.stats for name, d in node.drivers.items() if d is not None}

    def transport_stats(self) -> dict[str, TransportStats]:
        """Per port (``gossip``, ``raft``, ``coord``): the transport's counters
        (datagrams and frames, drops, connections, TLS failures, ...; see
        :class:`~clusterfunk.runtime.net.TransportStats`). Empty when not running."""
        host = self._host
        if host is None or self.node is None:
            return {}
        return {name: t.stats for name, t in sorted(host.transports.items())}

    # -- endpoints -------------------------------------------------------------------

    def _endpoint_tags(self) -> dict[str, str]:
        return {f"ep.{name}": addr for name, addr in self._endpoints.items()}

    def set_endpoint(self, name: str, address: str) -> None:
        """Publish endpoint ``name`` (tag ``ep.<name>``) to every member. The names of
        the node's own ports (``raft``, ``serf``, ``clusterfunk.coord``) are reserved;
        ``clusterfunk.management`` is the management API's (docs/operations.md)."""
        if not name or f"ep.{name}" in (co.TAG_RAFT, co.TAG_SERF, co.TAG_COORD):
            raise ValueError(f"reserved or empty endpoint name {name!r}")
        node = self._running()
        self._endpoints[name] = address
        tags = {**node.base_tags, **self._endpoint_tags()}
        node.gossip_driver.call(lambda core, now: core.set_tags(now, tags))

    def get_endpoint(self, node_id: str, name: str) -> str | None:
        """Endpoint ``name`` of member ``node_id`` (None if unknown)."""
        if self.gossip_core is None:
            return None
        m = self.gossip_core.member(node_id)
        if m is None:
            return None
        return m.tags.get(f"ep.{name}")

    # -- joining (issue 10: retry with backoff, wait_joined) -------------------------

    def _init_joining(
        self, resolve_seeds: Callable[[], Awaitable[Sequence[str]]] | None
    ) -> None:
        self.resolve_seeds = resolve_seeds
        #: join rounds that ended with no seed answering (gossip gave up; retried)
        self.join_failures = 0
        #: why the node has not joined yet, after a failed round (None once joined)
        self.join_error: str | None = None
        self._seeds_tried: list[str] = list(self.seeds)

    async def _start_joining(self, stack: AsyncExitStack) -> None:
        """With seeds: a task owned by this ``async with`` that joins again whenever
        gossip gives up (:meth:`_keep_joining`)."""
        node = self.node
        assert node is not None
        gaddr = self.addresses.get(GOSSIP)
        if not [s for s in self.seeds if s != gaddr] and self.resolve_seeds is None:
            return
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        nursery.start_soon(self._keep_joining, node)

    async def _keep_joining(self, node: ClusterNode) -> None:
        """Join retry rule: gossip tries the seeds ``join_max_attempts`` times; when it
        gives up, this logs a warning, waits (``JOIN_RETRY`` doubling up to
        ``JOIN_RETRY_MAX``), resolves the seeds again (``resolve_seeds``, e.g. DNS
        names) and joins again, until the node has joined. The node stays ``joining``
        meanwhile and :attr:`join_error` says why."""
        gossip = node.gossip
        delay = JOIN_RETRY
        while True:
            await wait_until([node.gossip_driver], lambda: gossip.joined or gossip.join_gave_up)
            if gossip.joined:
                self.join_error = None
                return
            self.join_failures += 1
            self.join_error = (f"no seed answered ({', '.join(self._seeds_tried) or 'none'}); "
                               f"{self.join_failures} join round(s) failed, retrying")
            log.warning("node %s: %s in %.1f s", self.node_id, self.join_error, delay)
            await trio.sleep(delay)
            delay = min(2 * delay, JOIN_RETRY_MAX)
            seeds = self.seeds
            if self.resolve_seeds is not None:
                try:
                    seeds = list(await self.resolve_seeds())
                except Exception as exc:  # a resolver failure: keep the last seeds
                    log.warning("node %s: resolving the seeds failed: %s", self.node_id, exc)
                    seeds = self._seeds_tried
            self._seeds_tried = list(seeds)
            node.join([s for s in seeds if s != self.addresses.get(GOSSIP)])

    def joined(self) -> bool:
        """This node has joined: a member is in the committed shard map, a gossip-only
        client (``member=False``) has joined gossip."""
        if self.member:
            return self.node_id in self.nodes()
        return self.gossip_core is not None and self.gossip_core.joined

    async def wait_joined(self, timeout: float) -> None:
        """Wait until :meth:`joined` holds; raises :class:`ClusterError` if it does not
        within ``timeout`` seconds, naming the seeds tried and how far the join got
        (no seed answered; or in gossip but not in the shard map, and why). The join
        itself goes on (see :meth:`_keep_joining`)."""
        node = self._running()
        with trio.move_on_after(timeout):
            await self._wait_state(self.joined)
            return
        raise ClusterError(self._join_report(node, timeout))

    def _join_report(self, node: ClusterNode, timeout: float) -> str:
        head = f"node {self.node_id} did not join within {timeout:g} s"
        seeds = ", ".join(self._seeds_tried) or "none"
        if not node.gossip.joined:
            return (f"{head}: no seed answered (seeds tried: {seeds}; "
                    f"{self.join_failures} join round(s) failed; still retrying)")
        leader = self.leader()
        why = (f"the leader {leader} has not added it yet" if leader is not None
               else "no Raft leader is known to it")
        return (f"{head}: joined gossip (seeds: {seeds}) but is not in the shard map: "
                f"{why} (state {self.state()}, role {self.role()})")

    # -- shard ownership ---------------------------------------------------------------

    def _init_ownership(
        self, on_release: Callable[[frozenset[int]], Awaitable[None]] | None,
        release_timeout: float,
    ) -> None:
        if not release_timeout > 0:
            raise ValueError("release_timeout must be > 0")
        self.on_release = on_release
        self.release_timeout = release_timeout
        #: release hooks that overran ``release_timeout`` / raised
        self.release_overruns = 0
        self.release_errors = 0
        self._ownership: EventHub[tuple[frozenset[int], frozenset[int], int]] = EventHub()
        self._release_nursery: trio.Nursery | None = None

    async def _open_release_tasks(self, stack: AsyncExitStack) -> None:
        """The nursery the release hooks run in (cancelled once the host stopped)."""
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        self._release_nursery = nursery

    def _wire_ownership(self, node: ClusterNode) -> None:
        node.glue.on_ownership.append(self._on_ownership)
        node.glue.release = self._start_release

    def _on_ownership(self, ev: co.OwnershipChanged) -> None:
        self._ownership.publish((ev.gained, ev.lost, ev.index))

    def _start_release(self, ev: co.ReleaseShards) -> None:
        assert self._release_nursery is not None
        self._release_nursery.start_soon(self._run_release, ev)

    async def _run_release(self, ev: co.ReleaseShards) -> None:
        """Run the release hook (bounded by ``release_timeout``), then report the
        release: the held ack leaves (late if the hook overran: the leader
        quarantines this node, as for any late ack)."""
        try:
            if self.on_release is not None:
                with trio.move_on_after(self.release_timeout) as scope:
                    await self.on_release(ev.shards)
                if scope.cancelled_caught:
                    self.release_overruns += 1
        except Exception:  # the application's bug must not hold the ack forever
            self.release_errors += 1
        finally:
            node = self.node
            if node is not None and self._stack is not None:
                node.release_finished(ev.index)  # the glue hears it once the handoff is done

    def serves(self, shard: int) -> bool:
        """Whether this node serves ``shard`` now: gained at a commit, not released,
        and the lease still holds (checked at the call). Serve a request only if
        this is True when you handle it."""
        node = self.node
        if node is None or self._stack is None:
            return False
        return bool(node.coord_driver.call(lambda c, now: c.serves(now, shard)))

    def owned(self) -> frozenset[int]:
        """The shards this node serves (see :meth:`serves`)."""
        return self.coord.owned if self.coord is not None else frozenset()

    def worker_id(self) -> int | None:
        """This node's worker id in the committed map (None when it is not in it)."""
        m = self.shard_map()
        if m is None or self.node_id not in m.nodes:
            return None
        return m.worker_id(self.node_id)

    def ownership(self) -> EventStream[tuple[frozenset[int], frozenset[int], int]]:
        """Every later change of the served shards, as ``(gained, lost, map_index)``
        (lost at a proposal, a lease expiry or a stop; gained at a commit), on its own
        unbounded queue; ends when the node stops."""
        return self._ownership.subscribe()
