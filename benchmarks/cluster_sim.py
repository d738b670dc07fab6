"""Benchmark: a simulated cluster (gossip + Raft + shard map) of 50 nodes, 10,000 shards.

    python benchmarks/cluster_sim.py [--json] [--nodes 50] [--shards 10000] [--seed 1]
                                     [--duration 150] [--no-check] [--profile]

Story (virtual time): all nodes start at 0 (n1 bootstraps Raft, the others join
through gossip and are added by the leader); a follower crashes at ``--crash-at``
(60 s) and the leader at ``--crash-at + 40``. Figures:

* virtual seconds per wall second (whole run, with the workload's checkers attached,
  unless ``--no-check``);
* time to the first committed map with every node;
* time from each crash to the first committed map without the crashed node
  (a follower is noticed by gossip failure detection; the leader by a Raft election
  plus one ack timeout);
* shards moved per reshard, Raft voters, log entries.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time

from clusterfunk.sharding import ShardMap
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.cluster import ClusterWorkload
from clusterfunk.trace import Tracer


def run(args: argparse.Namespace) -> dict:
    ns = argparse.Namespace(nodes=args.nodes, shards=args.shards, duration=args.duration,
                            settle=20.0, gossip_profile=args.gossip_profile)
    tracer = Tracer(lambda: 0.0, None)
    sim = Simulation(args.seed, tracer=tracer, link=LinkConfig(latency=0.001, jitter=0.0002))
    wl = ClusterWorkload(ns)
    wl.setup(sim)
    if args.no_check:  # keep only the map bookkeeping, not the Raft log checks
        sim.tracer.listeners.remove(wl._feed)
        sim.tracer.listeners.append(
            lambda rec: wl._feed(rec) if rec["ev"].startswith(("cluster.", "sim.")) else None
        )
        wl.check_every = 1e9

    leader_of: dict[str, str | None] = {}

    def crash_follower() -> None:
        lead = _leader(sim, wl)
        victim = next(n for n in reversed(wl.names) if n != lead)
        leader_of["follower"] = victim
        sim.crash(victim)

    def crash_leader() -> None:
        lead = _leader(sim, wl)
        leader_of["leader"] = lead
        if lead is not None:
            sim.crash(lead)

    sim.at(args.crash_at, crash_follower)
    sim.at(args.crash_at + 40.0, crash_leader)
    prof = cProfile.Profile() if args.profile else None
    wall0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    sim.run_until(args.duration)
    if prof is not None:
        prof.disable()
    wall = time.perf_counter() - wall0
    summary = wl.finish(sim)
    changes = summary["changes"]
    start = next((c["seconds"] for c in changes if c["kind"] == "start"), None)
    crashes = {c["target"]: c for c in changes if c["kind"] == "crash"}
    fol = crashes.get(leader_of.get("follower") or "")
    lea = crashes.get(leader_of.get("leader") or "")
    moved = summary["moved_per_reshard"]

    m = ShardMap(args.shards).update([f"n{i}" for i in range(1, args.nodes + 1)])[0]
    t0 = time.perf_counter()
    reps = 20
    for i in range(reps):
        m2, _ = m.update([n for n in m.nodes if n != f"n{1 + i % args.nodes}"])
        m2.encode()
    propose_cost = (time.perf_counter() - t0) / reps

    result = {
        "nodes": args.nodes,
        "shards": args.shards,
        "seed": args.seed,
        "virtual_seconds": args.duration,
        "wall_seconds": round(wall, 3),
        "speed_x": round(args.duration / wall, 1),
        "events": sim.stats["events"],
        "checkers": not args.no_check,
        "first_map_s": start,
        "follower_crash_to_map_s": fol["seconds"] if fol else None,
        "leader_crash_to_map_s": lea["seconds"] if lea else None,
        "reshards": summary["reshards"],
        "moved_per_reshard": moved,
        "moved_after_follower_crash": fol["moved"] if fol else None,
        "moved_after_leader_crash": lea["moved"] if lea else None,
        "fair_share": args.shards / args.nodes,
        "voters": summary["voters"],
        "leader_update_and_encode_ms": round(propose_cost * 1000, 3),
        "violations": summary["violations"],
    }
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(20)
        result["profile"] = s.getvalue()
    return result


def _leader(sim: Simulation, wl: ClusterWorkload) -> str | None:
    for n in wl.names:
        app = sim.app(n)
        if app is not None and app.raft is not None and app.raft.role == "leader":
            return n
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--shards", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=150.0)
    p.add_argument("--crash-at", type=float, default=60.0)
    p.add_argument("--gossip-profile", default="lan", choices=("lan", "local", "wan"))
    p.add_argument("--no-check", action="store_true", help="detach the Raft safety checks")
    p.add_argument("--profile", action="store_true", help="print the top 20 hot spots")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "profile"}, indent=2))
    else:
        print(f"cluster simulation: {r['nodes']} nodes, {r['shards']} shards, seed {r['seed']}")
        print(f"  speed: {r['speed_x']}x real time ({r['virtual_seconds']} virtual s in "
              f"{r['wall_seconds']} s wall, {r['events']} events, checkers "
              f"{'on' if r['checkers'] else 'off'})")
        print(f"  first committed map with all nodes: {r['first_map_s']} s")
        print(f"  follower crash -> map without it: {r['follower_crash_to_map_s']} s "
              f"({r['moved_after_follower_crash']} shards moved; fair share "
              f"{r['fair_share']:.0f})")
        print(f"  leader crash -> map without it: {r['leader_crash_to_map_s']} s "
              f"({r['moved_after_leader_crash']} shards moved)")
        mv = r["moved_per_reshard"]
        print(f"  reshards: {r['reshards']}, moved per reshard: {mv} "
              f"(median {statistics.median(mv) if mv else None})")
        print(f"  voters: {r['voters']}")
        print(f"  leader's ShardMap.update + encode: {r['leader_update_and_encode_ms']} ms")
        print(f"  violations: {r['violations'] or 'none'}")
    if "profile" in r:
        print(r["profile"], file=sys.stderr)
    return 1 if r["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
