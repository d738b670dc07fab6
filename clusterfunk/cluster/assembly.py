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
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from clusterfunk.cluster.coordinator import (
    TAG_COORD,
    TAG_RAFT,
    TAG_SERF,
    TAG_SERVICE,
    CoordinatorConfig,
    CoordinatorCore,
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

#: Default port numbers of the named ports.
DEFAULT_PORTS = {GOSSIP: 7946, RAFT: 8300, COORD: 8400}


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
    ) -> None:
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
        self.glue.kick()  # first pump: resync from the recovered state machine
        others = [s for s in seeds if s != gaddr]
        if others:
            host.defer(lambda: self.join(others))

    def join(self, seeds: Sequence[str]) -> None:
        """Ask gossip to join through ``seeds`` (``host:port`` of their gossip ports)."""
        self.gossip_member.join(seeds)

    @property
    def drivers(self) -> dict[str, Any]:
        return {GOSSIP: self.gossip_driver, RAFT: self.raft_driver, COORD: self.coord_driver}
