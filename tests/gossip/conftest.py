"""Shared harness for the gossip core tests: a small simulated cluster."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from clusterfunk.gossip.config import LAN, GossipConfig
from clusterfunk.gossip.core import GossipCore
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import SimHost, Simulation
from clusterfunk.trace import Tracer

PORT = 7946


class Cluster:
    """n1..nN gossip cores in one simulation; everyone joins through n1."""

    def __init__(
        self,
        n: int,
        seed: int = 1,
        config: GossipConfig = LAN,
        link: LinkConfig | None = None,
        join: bool = True,
        tags: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.tracer = Tracer(lambda: 0.0, keep=True)
        self.sim = Simulation(seed, tracer=self.tracer, link=link)
        self.config = config
        self.events: dict[str, list[Any]] = {}
        self.join = join
        self.tags = tags or {}
        for i in range(1, n + 1):
            self.sim.add_node(f"n{i}", self._factory)

    def _factory(self, host: SimHost) -> Any:
        core = GossipCore(
            host.name, host.address(PORT), host.rng, self.config, self.tags.get(host.name)
        )
        driver = host.driver(core, PORT)
        evs = self.events.setdefault(host.name, [])
        driver.subscribe(evs.append)
        if self.join:
            if host.incarnation > 1:  # a restart: rejoin through everybody else
                seeds = [f"{x}:{PORT}" for x in host.sim.names if x != host.name]
            elif host.name != "n1":
                seeds = [f"n1:{PORT}"]
            else:
                seeds = []
            if seeds:
                host.sim.at(
                    host.sim.now,
                    lambda: driver.running and driver.call(lambda c, now: c.join(now, seeds)),
                )
        return driver

    def driver(self, name: str) -> Any:
        return self.sim.app(name)

    def core(self, name: str) -> GossipCore:
        return self.sim.app(name).core

    def call(self, name: str, fn: Any) -> Any:
        return self.driver(name).call(fn)

    def run(self, until: float) -> None:
        self.sim.run_until(until)

    def view(self, observer: str, member: str) -> tuple[str, int] | None:
        m = self.core(observer).member(member)
        return None if m is None else (m.status, m.incarnation)

    def statuses(self, observer: str) -> dict[str, str]:
        return {m.name: m.status for m in self.core(observer).members()}

    def all_alive(self) -> bool:
        """Every live node sees exactly the live nodes as alive."""
        live = self.live()
        want = sorted(live)
        return all(
            [m.name for m in self.core(x).members() if m.status == "alive"] == want for x in live
        )

    def live(self) -> list[str]:
        return [n for n in self.sim.names if self.sim.alive(n)]

    def member_trace(self, node: str | None = None, member: str | None = None) -> list[dict]:
        return [
            r
            for r in self.tracer.of("gossip.member")
            if (node is None or r["node"] == node) and (member is None or r["member"] == member)
        ]


def fast(config: GossipConfig = LAN, **kw: Any) -> GossipConfig:
    return attrs.evolve(config, **kw)


@pytest.fixture
def cluster_factory():
    return Cluster
