"""Gossip load and simulation speed, LAN profile.

* packets (datagrams + stream frames) and bytes sent per member per second in
  steady state, at 50, 200 and 1,000 members (aim: flat within 10 %); measured
  from driver counters over a window after the cluster has converged;
* simulation speed with 1,000 gossip nodes: virtual seconds per wall second in
  steady state (aim: at least real time), and the wall time of the initial join
  storm (every node joins through the same three seeds at t = 0).

    python benchmarks/gossip_load.py [--json] [--sizes 50,200,1000] [--window 120]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gossip_common import emit, sim_cluster


def measure(nodes: int, window: float, seed: int = 1) -> dict:
    sim, wl = sim_cluster(seed, nodes)
    t0 = time.perf_counter()
    settle = 0.0
    # Converged: every node knows every other one as alive.
    while True:
        settle += 10.0
        sim.run_until(settle)
        if all(sim.app(n).core.num_members() == nodes for n in sim.names):
            break
        if settle > 600:
            raise RuntimeError(f"{nodes} nodes did not converge in 600 s")
    settle += 10.0  # let the last join broadcasts drain
    sim.run_until(settle)
    join_wall = time.perf_counter() - t0

    def counters() -> tuple[int, int, int]:
        dg = sum(d.stats.datagrams_out for d in wl.drivers)
        fr = sum(d.stats.frames_out for d in wl.drivers)
        by = sum(d.stats.bytes_out for d in wl.drivers)
        return dg, fr, by

    dg0, fr0, by0 = counters()
    ev0 = sim.stats["events"]
    t1 = time.perf_counter()
    sim.run_until(settle + window)
    wall = time.perf_counter() - t1
    dg1, fr1, by1 = counters()
    scale = nodes * window
    return {
        "nodes": nodes,
        "converged_at_s": settle - 10.0,
        "join_wall_s": round(join_wall, 2),
        "window_s": window,
        "packets_per_member_s": round((dg1 - dg0 + fr1 - fr0) / scale, 3),
        "datagrams_per_member_s": round((dg1 - dg0) / scale, 3),
        "frames_per_member_s": round((fr1 - fr0) / scale, 4),
        "bytes_per_member_s": round((by1 - by0) / scale, 1),
        "steady_wall_s": round(wall, 2),
        "virtual_s_per_wall_s": round(window / wall, 2) if wall > 0 else None,
        "events_per_wall_s": round((sim.stats["events"] - ev0) / wall) if wall > 0 else None,
        "false_positives": len(wl.fps.found),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--window", type=float, default=120.0)
    args = ap.parse_args()
    rows = [measure(int(n), args.window) for n in args.sizes.split(",") if n]
    ppm = [r["packets_per_member_s"] for r in rows]
    spread = (max(ppm) - min(ppm)) / min(ppm) if ppm and min(ppm) > 0 else None
    result = {"profile": "lan", "sizes": rows,
              "packets_spread": round(spread, 4) if spread is not None else None}
    lines = ["gossip load (LAN, steady state)"]
    for r in rows:
        lines.append(
            f"  {r['nodes']:5d} nodes: {r['packets_per_member_s']} pkts/member/s "
            f"({r['datagrams_per_member_s']} dgrams + {r['frames_per_member_s']} frames), "
            f"{r['bytes_per_member_s']} B/member/s; converged at {r['converged_at_s']}s "
            f"(join wall {r['join_wall_s']}s); sim speed {r['virtual_s_per_wall_s']}x real time")
    if spread is not None:
        lines.append(f"  packets per member per second: spread {spread:.1%} (aim <= 10 %)")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
