"""Failure detection time, LAN profile: crash -> dead at every survivor.

In simulation (5 and 50 nodes, several seeds) and with real ``gossip-node``
processes on loopback (5 by default). For each crash we record, per survivor,
the time from the crash (SIGKILL) to its ``dead`` verdict; figures are the
median and max over survivors (pooled over runs), plus the median and max of
the time until *every* survivor had decided. Serf (LAN) on this machine:
median over survivors 6.9-8.8 s with 5 agents, 9.6 s with 50.

    python benchmarks/gossip_detection.py [--json] [--sim-runs 10] [--real-runs 3]
        [--real-nodes 5] [--sizes 5,50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gossip_common import SERF_LAN, NodeProc, emit, sim_cluster, stats


def simulated(nodes: int, runs: int, settle: float) -> dict:
    per_survivor: list[float] = []
    all_dead: list[float] = []
    for seed in range(1, runs + 1):
        sim, wl = sim_cluster(seed, nodes)
        victim = f"n{nodes - (seed % max(1, nodes - 3))}"  # never one of the seeds n1..n3
        crash_at = settle + sim.rng("bench").random() * 5.0
        sim.at(crash_at, sim.crash, victim)
        sim.run_until(crash_at + wl.bound)
        [crash] = wl.detect.result()
        delays = [d for d in crash.delays.values() if d is not None]
        per_survivor += delays
        if crash.all_dead_after is not None:
            all_dead.append(crash.all_dead_after)
    return {"nodes": nodes, "runs": runs, "per_survivor_s": stats(per_survivor),
            "all_survivors_s": stats(all_dead)}


def real(nodes: int, runs: int) -> dict:
    per_survivor: list[float] = []
    all_dead: list[float] = []
    failures = 0
    for run in range(runs):
        procs: list[NodeProc] = []
        try:
            first = NodeProc("p1")
            procs.append(first)
            got = first.wait(lambda r: r["ev"] == "listening", 30)
            if got is None:
                raise RuntimeError("first node did not start")
            addr = got[1]["addr"]
            for i in range(2, nodes + 1):
                procs.append(NodeProc(f"p{i}", seeds=addr))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for p in procs:
                    p.poll()
                if all(p.alive_view() == nodes for p in procs):
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("cluster did not converge")
            time.sleep(2.0)  # let probing settle into its rhythm
            victim = procs[(run % (nodes - 1)) + 1]
            t0 = time.monotonic()
            victim.stop()
            times = []
            for p in procs:
                if p is victim:
                    continue
                hit = p.wait(lambda r, v=victim.name: r["ev"] == "member" and r["member"] == v
                             and r["status"] == "dead", 120)
                if hit is None:
                    failures += 1
                else:
                    times.append(hit[0] - t0)
            per_survivor += times
            if len(times) == nodes - 1:
                all_dead.append(max(times))
        finally:
            for p in procs:
                p.stop()
    return {"nodes": nodes, "runs": runs, "per_survivor_s": stats(per_survivor),
            "all_survivors_s": stats(all_dead), "undetected": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="5,50", help="simulated cluster sizes")
    ap.add_argument("--sim-runs", type=int, default=10)
    ap.add_argument("--real-nodes", default="5", help="real process cluster sizes ('' = skip)")
    ap.add_argument("--real-runs", type=int, default=3)
    args = ap.parse_args()
    result: dict = {"profile": "lan", "serf_lan_median": SERF_LAN, "simulation": [], "real": []}
    lines = ["gossip failure detection (LAN): crash -> dead, seconds"]
    for n in (int(x) for x in args.sizes.split(",") if x):
        t0 = time.perf_counter()
        r = simulated(n, args.sim_runs, settle=30.0 if n <= 10 else 60.0)
        r["wall_s"] = round(time.perf_counter() - t0, 2)
        result["simulation"].append(r)
        ps, al = r["per_survivor_s"], r["all_survivors_s"]
        lines.append(f"  sim  {n:4d} nodes x{r['runs']:3d}: per survivor median {ps['median']} "
                     f"max {ps['max']}; all survivors median {al['median']} max {al['max']}"
                     f"   (Serf: {SERF_LAN.get(str(n), '-')})")
    for n in (int(x) for x in args.real_nodes.split(",") if x):
        r = real(n, args.real_runs)
        result["real"].append(r)
        ps, al = r["per_survivor_s"], r["all_survivors_s"]
        lines.append(f"  real {n:4d} procs x{r['runs']:3d}: per survivor median {ps['median']} "
                     f"max {ps['max']}; all survivors median {al['median']} max {al['max']}; "
                     f"undetected {r['undetected']}   (Serf: {SERF_LAN.get(str(n), '-')})")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
