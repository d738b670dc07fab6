"""A small sharded service and simulation builders for the routing tests."""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Mapping
from typing import Any

from clusterfunk.cluster.assembly import ClusterNode
from clusterfunk.routing.api import ServiceError
from clusterfunk.routing.client import ClientConfig, Finished, HostClient
from clusterfunk.routing.server import ServerConfig
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.raft_storage import SimPersister, SimStorage
from clusterfunk.sim.simulation import SimHost, Simulation
from clusterfunk.sim.workloads.cluster import ClusterWorkload
from clusterfunk.trace import Tracer


class Counters:
    """Per-key counters; ``handle`` with payload ``b"inc"`` adds one and returns the
    new value, ``b"get"`` returns it; ``b"fail"`` raises ServiceError. A shard's
    state (its keys' counters, JSON) is handed over on release."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.shards: dict[int, dict[int, int]] = {}
        self.acquired: list[tuple[frozenset[int], dict[int, bytes]]] = []
        self.released: list[frozenset[int]] = []

    def handle(self, shard: int, key: int, payload: bytes) -> bytes:
        if shard not in self.shards:
            raise AssertionError(f"{self.name}: handle for shard {shard} not acquired")
        if payload == b"fail":
            raise ServiceError("asked to fail")
        kv = self.shards[shard]
        if payload == b"inc":
            kv[key] = kv.get(key, 0) + 1
        return str(kv.get(key, 0)).encode()

    def release(self, shards: frozenset[int]) -> Mapping[int, bytes]:
        self.released.append(shards)
        out = {}
        for s in shards:
            kv = self.shards.pop(s, None)
            if kv:
                out[s] = json.dumps(sorted(kv.items())).encode()
        return out

    def acquire(self, shards: frozenset[int], state: Mapping[int, bytes]) -> None:
        self.acquired.append((shards, dict(state)))
        for s in shards:
            self.shards[s] = {k: v for k, v in json.loads(state[s])} if s in state else {}


class RoutedWorkload(ClusterWorkload):
    """The cluster workload with a :class:`Counters` service on every member."""

    def __init__(self, args: argparse.Namespace, server_config: ServerConfig | None = None
                 ) -> None:
        super().__init__(args)
        self.server_config = server_config
        self.services: dict[str, Counters] = {}

    def factory(self, host: SimHost) -> ClusterNode:
        name, seed, incarnation = host.name, host.sim.seed, host.incarnation

        def rng(what: str) -> random.Random:
            return random.Random(f"{seed}/cluster/{name}/{incarnation}/{what}")

        storage = SimStorage(host.disk)
        member = name in self.members
        service = Counters(name) if member else None
        if service is not None:
            self.services[name] = service
        return ClusterNode(
            host, storage=storage, persister=SimPersister.for_host(host, storage), rng=rng,
            weights=self.weights, gossip_config=self.gossip_config,
            raft_config=self.raft_config, coord_config=self.coord_config,
            bootstrap=self.bootstrap if incarnation == 1 else None, member=member,
            seeds=self.seeds, service=service, server_config=self.server_config,
        )


def make(seed: int = 1, nodes: int = 4, shards: int = 60, *, clients: int = 1,
         server_config: ServerConfig | None = None, client_config: ClientConfig | None = None,
         **opts: Any,
         ) -> tuple[Simulation, RoutedWorkload, list[HostClient], list[tuple[str, Finished]]]:
    """A simulation of ``nodes`` members running :class:`Counters` and ``clients``
    routing clients ``c1 ..`` (seeds: the first three members); ``done`` collects
    ``(client name, Finished)`` in the order requests ended."""
    ns = argparse.Namespace(nodes=nodes, shards=shards, duration=opts.pop("duration", 60.0),
                            **opts)
    tracer = Tracer(lambda: 0.0, None, keep=True)
    sim = Simulation(seed, tracer=tracer, link=LinkConfig(latency=0.001, jitter=0.0002))
    wl = RoutedWorkload(ns, server_config)
    wl.setup(sim)
    done: list[tuple[str, Finished]] = []
    seeds = [f"n{i}:8600" for i in range(1, min(3, nodes) + 1)]
    hosts: list[HostClient] = []

    def client_factory(host: SimHost) -> HostClient:
        def finished(f: Finished, n: str = host.name) -> None:
            done.append((n, f))

        c = HostClient(host, seeds, config=client_config, on_finished=finished)
        hosts.append(c)
        return c

    for i in range(1, clients + 1):
        sim.add_node(f"c{i}", client_factory)
    return sim, wl, hosts, done
