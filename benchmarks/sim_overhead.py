"""Simulator overhead: delivered messages per second with a trivial handler.

Tokens circulate among N nodes: every delivered datagram makes the receiver send
one to the next node (hot potato). Each message goes the whole way a protocol
message goes: core output -> driver -> wire encode -> network model (loss,
latency, jitter draws) -> event queue -> wire decode -> driver -> core.

    python benchmarks/sim_overhead.py [--json] [--nodes 50] [--tokens 200] [--messages 200000]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import attrs

from clusterfunk import wire
from clusterfunk.runtime.api import Output
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation


@wire.message(14)
@attrs.frozen
class Potato:
    hops: int


class HotPotato:
    def __init__(self, me: int, n: int, tokens: int) -> None:
        self.next = f"n{me % n + 1}:1"
        self.tokens = tokens if me == 1 else 0
        self.out = Output()

    def start(self, now: float) -> None:
        for _ in range(self.tokens):
            self.out.send(self.next, Potato(0))

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.out.send(self.next, Potato(msg.hops + 1))

    def on_tick(self, now: float) -> None:
        pass

    def next_deadline(self) -> float:
        return math.inf

    def drain(self) -> Output | None:
        out = self.out
        if not out.sends:
            return None
        self.out = Output()
        return out


def one_run(nodes: int, tokens: int, messages: int, seed: int) -> float:
    sim = Simulation(seed, link=LinkConfig(latency=0.001, jitter=0.0002))

    for i in range(1, nodes + 1):
        sim.add_node(f"n{i}", lambda host, i=i: host.driver(HotPotato(i, nodes, tokens), 1))
    sim.start()
    delivered = sim.stats
    t0 = time.perf_counter()
    sim.run_until(math.inf, stop=lambda: delivered["datagrams_delivered"] >= messages)
    wall = time.perf_counter() - t0
    return delivered["datagrams_delivered"] / wall


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rates = [one_run(a.nodes, a.tokens, a.messages, seed) for seed in range(a.runs)]
    result = {
        "nodes": a.nodes,
        "messages_per_run": a.messages,
        "runs": a.runs,
        "delivered_per_s_median": round(statistics.median(rates)),
        "delivered_per_s_min": round(min(rates)),
        "delivered_per_s_max": round(max(rates)),
        "goal_per_s": 50_000,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(
            f"simulator: {result['delivered_per_s_median']:,} delivered messages/s (median of "
            f"{a.runs}; min {result['delivered_per_s_min']:,}, "
            f"max {result['delivered_per_s_max']:,}); "
            f"goal >= 50,000/s"
        )


if __name__ == "__main__":
    main()
