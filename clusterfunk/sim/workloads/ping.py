"""The ``ping`` simulation workload: the stand-in used before and beside the protocols.

Every node runs :class:`~clusterfunk.demo.ping.PingCore` on port 7000. The
online checker flags a pong that answers a ping that was never sent (which would
mean the network or the codec invented a message).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from clusterfunk.demo.ping import PingCore
from clusterfunk.sim.simulation import SimHost, Simulation

PORT = 7000


class PingWorkload:
    def __init__(self, args: argparse.Namespace) -> None:
        self.nodes: int = args.nodes
        self.interval: float = getattr(args, "ping_interval", 1.0)
        self.cores: dict[str, list[PingCore]] = {}
        self.violations: list[str] = []
        self._sent: set[tuple[str, int]] = set()

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--ping-interval", type=float, default=1.0, help="mean seconds between pings (ping)"
        )

    def fault_targets(self, sim: Simulation) -> list[str]:
        return sim.names

    def setup(self, sim: Simulation) -> None:
        addrs = [f"n{i}:{PORT}" for i in range(1, self.nodes + 1)]

        def factory(host: SimHost) -> PingCore:
            core = PingCore(host.address(PORT), addrs, host.rng, interval=self.interval)
            host.driver(core, PORT)
            self.cores.setdefault(host.name, []).append(core)
            return core

        for i in range(1, self.nodes + 1):
            sim.add_node(f"n{i}", factory)
        sim.tracer.listeners.append(self._check)

    def _check(self, rec: dict[str, Any]) -> None:
        ev = rec["ev"]
        if ev == "ping.send":
            self._sent.add((rec["node"], rec["seq"]))
        elif ev == "ping.rtt" and (rec["node"], rec["seq"]) not in self._sent:
            self.violations.append(
                f"t={rec['t']}: {rec['node']} got a pong for unsent ping {rec['seq']}"
            )

    def finish(self, sim: Simulation) -> dict[str, Any]:
        rtts = [r for cs in self.cores.values() for c in cs for r in c.rtts]
        pings = sum(c.seq for cs in self.cores.values() for c in cs)
        pongs = sum(c.pongs for cs in self.cores.values() for c in cs)
        return {
            "pings": pings,
            "pongs": pongs,
            "pong_ratio": round(pongs / pings, 4) if pings else None,
            "rtt_median_ms": round(statistics.median(rtts) * 1000, 3) if rtts else None,
            "violations": self.violations,
        }
