"""One cluster node, assembled once for every host.

:class:`ClusterNode` wires a node's parts -- the gossip core, the Raft core over the
given storage, the coordinator, their three drivers and the
:class:`~clusterfunk.cluster.glue.NodeGlue` -- on a
:class:`~clusterfunk.runtime.host.Host`. The public Trio API
(:class:`clusterfunk.node.Cluster`) builds it on a
:class:`~clusterfunk.runtime.trio_host.TrioHost`; the ``cluster`` simulation
workload builds the very same object on a :class:`~clusterfunk.sim.simulation.SimHost`.
Nothing else wires a cluster node.

Rules:

1. Driver order is gossip, Raft, coordinator (the host starts them in this order).
2. Raft is driven with a lazy timer (a follower's election deadline moves on every
   AppendEntries; see :mod:`clusterfunk.runtime.driver`). The Raft and coordination
   drivers screen every message with their authorizer (runtime/auth.py), requiring
   the sender's identity when the host authenticates frames; the gossip part is the
   gossip assembly (:class:`~clusterfunk.gossip.assembly.GossipMember`, keyring
   included).
3. A node bootstraps only when the caller passes ``bootstrap`` naming it (the
   caller's policy: e.g. no seeds, or the simulation's first boot of ``n1``), and
   the Raft core bootstraps only an empty store.
4. Joining the seeds is deferred (``host.defer``): it runs after the drivers start,
   outside any driver step.
5. Requests (docs/routing.md): a member given a ``service`` runs the request
   server (:class:`~clusterfunk.routing.server.RequestServer`) on port ``app``
   after the other three drivers and publishes its address (gossip tag
   ``ep.clusterfunk.requests``). Coordinator outputs reach it deferred, in their
   order: a gain (``OwnershipChanged``) and a loss (the service releases and hands
   state over); the glue's ``released(index)`` is reported only once both the
   request server finished its handoff and the owner's release work (the
   ``release`` handler; :meth:`ClusterNode.release_finished`) is done. A
   nonmember runs a :class:`~clusterfunk.routing.client.RoutingClient` on port
   ``app`` that keeps the committed map (:attr:`ClusterNode.map_client`), asking
   the members found through that tag.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clusterfunk.cluster.coordinator import (
    TAG_COORD,
    TAG_RAFT,
    TAG_SERF,
    TAG_SERVICE,
    CoordinatorConfig,
    CoordinatorCore,
    OwnershipChanged,
    timing_errors,
)
from clusterfunk.cluster.glue import NodeGlue
from clusterfunk.cluster.statemachine import ClusterStateMachine
from clusterfunk.cluster.views import GossipMembershipView, RaftCoreView
from clusterfunk.gossip.assembly import GossipMember
from clusterfunk.gossip.config import GossipConfig
from clusterfunk.gossip.keyring import Keyring, NonceSource
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.persist import SyncPersister
from clusterfunk.runtime.api import Persister
from clusterfunk.runtime.auth import coordination_authorizer, raft_authorizer
from clusterfunk.runtime.host import COORD, GOSSIP, RAFT, Host

if TYPE_CHECKING:
    from clusterfunk.routing.api import ShardService
    from clusterfunk.routing.client import ClientConfig, RoutingClient
    from clusterfunk.routing.server import RequestServer, ServerConfig

#: Default port numbers of the named ports.
DEFAULT_PORTS = {GOSSIP: 7946, RAFT: 8300, COORD: 8400, "app": 8600}


class ClusterNode:
    """One cluster node's parts, wired on ``host`` (see the module docstring).

    ``rng(what)`` gives each part its own random source (the simulator derives them
    from the seed, production from one ``random.Random``). ``storage`` is the Raft
    store (ignored for a gossip-only client, ``member=False``) and ``persister`` makes
    its writes durable (default: synchronously). ``tags`` are extra gossip tags
    (endpoints ``ep.<name>``). ``keyring`` seals (or, without ``encrypt``,
    authenticates) every gossip packet; ``nonce`` is its nonce source (the simulator
    passes a seeded one).
    """

    def __init__(
        self,
        host: Host,
        *,
        storage: Any,
        rng: Callable[[str], random.Random],
        weights: int | Sequence[int] | Sequence[float],
        gossip_config: GossipConfig,
        raft_config: RaftConfig,
        coord_config: CoordinatorConfig,
        bootstrap: Mapping[str, str] | None = None,
        member: bool = True,
        seeds: Sequence[str] = (),
        service_name: str = "clusterfunk",
        tags: Mapping[str, str] | None = None,
        trace_applies: bool = True,
        persister: Persister | None = None,
        keyring: Keyring | None = None,
        encrypt: bool = True,
        nonce: NonceSource = os.urandom,
        service: ShardService | None = None,
        server_config: ServerConfig | None = None,
        client_config: ClientConfig | None = None,
    ) -> None:
        from clusterfunk.routing.api import APP, TAG_REQUESTS

        if service is not None and not member:
            raise ValueError("a nonmember serves no shards: it takes no service")
        bad = timing_errors(
            coord_config,
            heartbeat_period=raft_config.member_heartbeat_period,
            election_timeout=raft_config.election_timeout,
            max_clock_drift=raft_config.max_clock_drift,
        )
        if bad:
            raise ValueError("unsafe timing: " + "; ".join(bad))
        name = host.name
        self.host = host
        self.name = name
        gaddr = host.address(GOSSIP)
        self.base_tags = {
            TAG_SERF: gaddr,
            TAG_COORD: host.address(COORD),
            TAG_SERVICE: service_name,
        }
        if member:
            self.base_tags[TAG_RAFT] = host.address(RAFT)
        if service is not None:
            self.base_tags[TAG_REQUESTS] = host.address(APP)
        self.gossip_member = GossipMember(
            host, rng=rng("gossip"), config=gossip_config,
            tags={**self.base_tags, **(tags or {})}, keyring=keyring, encrypt=encrypt,
            nonce=nonce,
        )
        self.gossip = self.gossip_member.core
        self.gossip_driver = self.gossip_member.driver
        self.sm = ClusterStateMachine()
        self.raft: RaftCore | None = None
        self.raft_driver = None
        if member:
            boot = dict(bootstrap) if bootstrap and name in bootstrap else None
            self.raft = RaftCore(
                name, storage, self.sm, rng("raft"), config=raft_config, bootstrap=boot
            )
            self.raft.trace_applies = trace_applies
            self.raft_driver = host.driver(
                self.raft, RAFT, lazy_timer=True,
                persister=persister if persister is not None else SyncPersister(storage),
                authorizer=raft_authorizer(require_identity=host.authenticated),
            )
        cfg = attrs.evolve(coord_config, wall_offset=host.wall_offset())
        self.coord = CoordinatorCore(
            name,
            host.address(COORD),
            rng("coord"),
            raft=None if self.raft is None else RaftCoreView(self.raft),
            gossip=GossipMembershipView(self.gossip),
            sm=self.sm,
            weights=weights,
            config=cfg,
        )
        self.coord_driver = host.driver(
            self.coord, COORD,
            authorizer=coordination_authorizer(require_identity=host.authenticated),
        )
        self.glue = NodeGlue(self.coord_driver, self.raft_driver, self.gossip_driver, host.defer)
        host.on_stop.append(self.glue.close)
        self.routing: RequestServer | None = None
        self.routing_driver: Any = None
        self.map_client: RoutingClient | None = None
        self.map_client_driver: Any = None
        self._releases_done: dict[int, list[int]] = {}  # index -> [server, owner] counts
        self._map_seen = (-1, -1)
        if service is not None:
            self._wire_routing(service, server_config)
        elif not member:
            self._wire_map_client(rng("routing"), client_config)
        self.glue.kick()  # first pump: resync from the recovered state machine
        others = [s for s in seeds if s != gaddr]
        if others:
            host.defer(lambda: self.join(others))

    # -- requests (rule 5) --------------------------------------------------------

    def _wire_routing(self, service: ShardService, config: ServerConfig | None) -> None:
        from clusterfunk.routing.api import APP
        from clusterfunk.routing.auth import routing_authorizer
        from clusterfunk.routing.server import RequestServer

        host = self.host
        self.routing = RequestServer(self.name, service, self.coord,
                                     GossipMembershipView(self.gossip), config)
        self.routing_driver = host.driver(
            self.routing, APP,
            authorizer=routing_authorizer(require_identity=host.authenticated),
        )
        self.routing_driver.subscribe(self._on_routing_event)
        self.glue.on_ownership.append(self._on_ownership)
        self.glue.release = lambda ev: self.release_finished(ev.index)
        self.coord_driver.after_step(self._watch_map)

    def _routing_call(self, fn: Callable[[Any, float], Any]) -> None:
        def run() -> None:
            d = self.routing_driver
            if d is not None and d.running:
                d.call(fn)
        self.host.defer(run)

    def _watch_map(self) -> None:
        c, p = self.coord.committed, self.coord.pending
        seen = (c.index if c is not None else 0, p.index if p is not None else 0)
        if seen != self._map_seen and self.routing is not None:
            self._map_seen = seen
            self.routing.note_map(c)  # records history only: no output
            self._routing_call(lambda r, now: r.map_changed(now))

    def _on_ownership(self, ev: OwnershipChanged) -> None:
        gained, lost, index = ev.gained, ev.lost, ev.index
        if lost:
            self._routing_call(lambda r, now: r.release(now, index, lost))
        if gained:
            self._routing_call(lambda r, now: r.ownership(now, gained, index))

    def _on_routing_event(self, ev: Any) -> None:
        from clusterfunk.routing.server import Released

        if isinstance(ev, Released):
            self._release_part(ev.index, 0)

    def release_finished(self, index: int) -> None:
        """The owner's release work for the ``ReleaseShards`` at ``index`` is done
        (the Trio API: its ``on_release`` hook ended). The glue hears ``released``
        once the request server's handoff is done too (rule 5)."""
        if self.routing is None:
            self.glue.released(index)
        else:
            self._release_part(index, 1)

    def _release_part(self, index: int, part: int) -> None:
        done = self._releases_done.setdefault(index, [0, 0])
        done[part] += 1
        if done[0] > 0 and done[1] > 0:
            done[0] -= 1
            done[1] -= 1
            if done == [0, 0]:
                del self._releases_done[index]
            self.glue.released(index)

    def _wire_map_client(self, rng: random.Random, config: ClientConfig | None) -> None:
        from clusterfunk.gossip import events as gev
        from clusterfunk.routing.api import APP
        from clusterfunk.routing.auth import routing_authorizer
        from clusterfunk.routing.client import RoutingClient

        host = self.host
        self.map_client = RoutingClient(self.name, rng, (), config)
        self.map_client_driver = host.driver(
            self.map_client, APP,
            authorizer=routing_authorizer(require_identity=host.authenticated),
        )

        def update() -> None:
            d = self.map_client_driver
            if d is not None and d.running:
                seeds = self.request_addresses()
                d.call(lambda c, now: c.set_seeds(now, seeds))

        def on_gossip(ev: Any) -> None:
            if isinstance(ev, gev.MEMBER_EVENTS):
                host.defer(update)

        self.gossip_driver.subscribe(on_gossip)

    def request_addresses(self) -> list[str]:
        """The request addresses the live gossip members publish, sorted."""
        from clusterfunk.routing.api import TAG_REQUESTS

        out = []
        for m in GossipMembershipView(self.gossip).members():
            addr = m.tags.get(TAG_REQUESTS)
            if addr and m.status.live:
                out.append(addr)
        return sorted(out)

    def join(self, seeds: Sequence[str]) -> None:
        """Ask gossip to join through ``seeds`` (``host:port`` of their gossip ports)."""
        self.gossip_member.join(seeds)

    @property
    def drivers(self) -> dict[str, Any]:
        from clusterfunk.routing.api import APP

        return {GOSSIP: self.gossip_driver, RAFT: self.raft_driver, COORD: self.coord_driver,
                APP: self.routing_driver or self.map_client_driver}
