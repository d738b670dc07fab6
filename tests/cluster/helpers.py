"""Building and running cluster simulations in tests."""

from __future__ import annotations

import argparse
from typing import Any

from clusterfunk.sim.nemesis import Nemesis, NemesisConfig
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.cluster import ClusterWorkload
from clusterfunk.trace import Tracer


def make(
    seed: int = 1,
    nodes: int = 5,
    shards: int = 1000,
    *,
    keep: bool = True,
    link: LinkConfig | None = None,
    **opts: Any,
) -> tuple[Simulation, ClusterWorkload]:
    ns = argparse.Namespace(nodes=nodes, shards=shards, duration=opts.pop("duration", 60.0),
                            **opts)
    tracer = Tracer(lambda: 0.0, None, keep=keep)
    sim = Simulation(seed, tracer=tracer, link=link or LinkConfig(latency=0.001, jitter=0.0002))
    wl = ClusterWorkload(ns)
    wl.setup(sim)
    return sim, wl


def nemesis(sim: Simulation, wl: ClusterWorkload, kinds: tuple[str, ...], until: float) -> Nemesis:
    n = Nemesis(sim, wl.fault_targets(sim), NemesisConfig(kinds=kinds))
    n.start(until=until)
    return n


def committed(sim: Simulation) -> list[dict[str, Any]]:
    """First ``committed`` record of every proposal index, in order."""
    seen: set[int] = set()
    out = []
    for r in sim.tracer.of("cluster.shardmap"):
        if r["phase"] == "committed" and r["index"] not in seen:
            seen.add(r["index"])
            out.append(r)
    return out


def leader(sim: Simulation, wl: ClusterWorkload) -> str | None:
    for n in wl.names:
        app = sim.app(n)
        if app is not None and app.raft is not None and app.raft.role == "leader":
            return n
    return None
