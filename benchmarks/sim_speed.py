"""Simulation speed, side by side: this tree against other checkouts, in one run.

Two jobs, each run in a fresh process per measurement:

* ``main``: the README's main job, exactly as the README gives it (50 nodes, 10,000
  shards, 400 virtual seconds, seed 1, 1 % loss, every nemesis, trace written to a
  file): wall time, user CPU, speed (virtual seconds per wall second) and the
  sha256 of the trace (same seed -> same bytes, whichever tree is faster);
* ``gossip-join``: 1,000 gossip nodes (LAN profile) that all start at t = 0 and
  join through the same three seeds (the mass join: ``--join`` virtual seconds, by
  which nearly every node knows every other one), then a steady window: wall time
  and user CPU of each phase and the speed against real time. The worker sets the
  garbage collector as ``clusterfunk simulate`` does in the measured tree
  (``sim.runner.GC_THRESHOLD``, where it exists).

Trees are measured interleaved (tree A run 1, tree B run 1, tree A run 2, ...), and
medians reported, because the machines are shared and drift by up to 2x within
minutes; user CPU is steadier than wall time. Compare the current code with a base
commit like this::

    git clone -q . /tmp/base && git -C /tmp/base checkout -q <commit>
    python benchmarks/sim_speed.py --tree /tmp/base --runs 3 --json

    python benchmarks/sim_speed.py [--json] [--jobs main,gossip-join] [--runs 3]
                                   [--tree PATH ...] [--duration 400] [--gossip-nodes 1000]
                                   [--join 10] [--window 30]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THIS_TREE = HERE.parent


def main_job_args(duration: float, trace: str) -> list[str]:
    """The README's main job (keep in step with README.md)."""
    return ["simulate", "--protocol", "cluster", "--nodes", "50", "--shards", "10000",
            "--duration", f"{duration:g}", "--seed", "1", "--loss", "0.01",
            "--nemesis", "all", "--trace", trace]


def _run(cmd: list[str], tree: Path) -> tuple[float, float, str]:
    """Run ``cmd`` with ``tree`` first on the import path: (wall s, user CPU s, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env, cwd=str(tree))
        _pid, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode() if p.stderr else ""
        out.seek(0)
        text = out.read()
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed ({p.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_utime, text


def measure_main(tree: Path, duration: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "trace.jsonl")
        cmd = [sys.executable, "-m", "clusterfunk", *main_job_args(duration, trace)]
        wall, user, _ = _run(cmd, tree)
        digest = hashlib.sha256(Path(trace).read_bytes()).hexdigest()
    return {"wall_s": round(wall, 3), "user_s": round(user, 3),
            "speed_x": round(duration / wall, 1), "speed_x_per_cpu": round(duration / user, 1),
            "trace_sha256": digest}


def measure_gossip(tree: Path, nodes: int, join: float, window: float) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "sim_speed.py"), "--worker", "gossip-join",
           "--gossip-nodes", str(nodes), "--join", str(join), "--window", str(window)]
    wall, user, text = _run(cmd, tree)
    r: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    r["process_wall_s"] = round(wall, 3)
    r["process_user_s"] = round(user, 3)
    return r


def gossip_worker(nodes: int, join: float, window: float) -> None:
    """Runs in the measured tree (imports resolve through PYTHONPATH)."""
    import resource

    from clusterfunk.sim.netmodel import LinkConfig
    from clusterfunk.sim.simulation import Simulation

    try:
        from clusterfunk.sim.workloads.gossip import GossipWorkload
    except ImportError:  # older layout
        from clusterfunk.gossip.simwork import GossipWorkload  # type: ignore[no-redef]

    def cpu() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_utime

    # The collector setting `clusterfunk simulate` runs with (sim/runner.py), where
    # the tree has one: the job measures what a simulation run costs.
    try:
        from clusterfunk.sim.runner import GC_THRESHOLD
    except ImportError:  # older tree: the interpreter's default
        pass
    else:
        import gc
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    sim = Simulation(1, link=LinkConfig())
    wl = GossipWorkload(argparse.Namespace(nodes=nodes, duration=0.0, gossip_profile="lan"))
    wl.setup(sim)
    w0, c0 = time.perf_counter(), cpu()
    sim.run_until(join)  # the mass join: every node starts at 0 and joins the seeds
    w1, c1 = time.perf_counter(), cpu()
    known = sum(sim.app(n).core.num_members() for n in sim.names)
    sim.run_until(join + window)
    w2, c2 = time.perf_counter(), cpu()
    join_wall, steady_wall = w1 - w0, w2 - w1
    print(json.dumps({
        "nodes": nodes,
        "join_s": join,
        "known_after_join": round(known / (nodes * nodes), 5),
        "join_wall_s": round(join_wall, 3),
        "join_user_s": round(c1 - c0, 3),
        "join_speed_x": round(join / join_wall, 2),
        "join_speed_x_per_cpu": round(join / (c1 - c0), 2),
        "join_cpu_per_virtual_s": round((c1 - c0) / join, 3),
        "window_s": window,
        "steady_wall_s": round(steady_wall, 3),
        "steady_user_s": round(c2 - c1, 3),
        "steady_speed_x": round(window / steady_wall, 2),
        "steady_cpu_per_virtual_s": round((c2 - c1) / window, 3) if window else None,
        "total_speed_x": round((join + window) / (join_wall + steady_wall), 2),
        "total_speed_x_per_cpu": round((join + window) / (c2 - c0), 2),
        "events": sim.stats["events"],
    }))


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--jobs", default="main,gossip-join")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tree", action="append", default=[],
                   help="another checkout to measure (repeatable); this tree is always measured")
    p.add_argument("--duration", type=float, default=400.0, help="main job virtual seconds")
    p.add_argument("--gossip-nodes", type=int, default=1000)
    p.add_argument("--join", type=float, default=10.0,
                   help="gossip: virtual seconds of the mass join phase")
    p.add_argument("--window", type=float, default=30.0,
                   help="gossip: steady virtual seconds after the join")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "gossip-join":
        gossip_worker(args.gossip_nodes, args.join, args.window)
        return 0
    trees = [THIS_TREE, *(Path(t).resolve() for t in args.tree)]
    jobs = [j for j in args.jobs.split(",") if j]
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        j: {str(t): [] for t in trees} for j in jobs}
    for _ in range(args.runs):
        for job in jobs:
            for tree in trees:
                if job == "main":
                    r = measure_main(tree, args.duration)
                elif job == "gossip-join":
                    r = measure_gossip(tree, args.gossip_nodes, args.join, args.window)
                else:
                    raise SystemExit(f"unknown job {job!r}")
                rows[job][str(tree)].append(r)
                if not args.json:
                    print(f"  {job} {tree}: {r}", file=sys.stderr)
    result: dict[str, Any] = {"runs": args.runs, "trees": [str(t) for t in trees],
                              "load_avg": os.getloadavg(), "jobs": {}}
    for job in jobs:
        out: dict[str, Any] = {}
        for tree_name, rs in rows[job].items():
            if job == "main":
                hashes = sorted({r["trace_sha256"] for r in rs})
                this = {r["trace_sha256"] for r in rows[job][str(THIS_TREE)]}
                out[tree_name] = {
                    "wall_s_median": _median(rs, "wall_s"),
                    "user_s_median": _median(rs, "user_s"),
                    "speed_x_median": _median(rs, "speed_x"),
                    "trace_sha256": hashes,
                    # every run of this tree wrote the same bytes as every run of the
                    # tree the script is in (a speed change must leave this True)
                    "same_trace_as_this_tree": len(this) == 1 and set(hashes) == this,
                    "runs": rs,
                }
            else:
                out[tree_name] = {
                    "known_after_join": rs[0]["known_after_join"],
                    "join_wall_s_median": _median(rs, "join_wall_s"),
                    "join_user_s_median": _median(rs, "join_user_s"),
                    "join_speed_x_median": _median(rs, "join_speed_x"),
                    "join_speed_x_per_cpu_median": _median(rs, "join_speed_x_per_cpu"),
                    "join_cpu_per_virtual_s_median": _median(rs, "join_cpu_per_virtual_s"),
                    "steady_user_s_median": _median(rs, "steady_user_s"),
                    "steady_cpu_per_virtual_s_median": _median(rs, "steady_cpu_per_virtual_s")
                    if rs[0].get("steady_cpu_per_virtual_s") is not None else None,
                    "steady_speed_x_median": _median(rs, "steady_speed_x"),
                    "total_speed_x_median": _median(rs, "total_speed_x"),
                    "total_speed_x_per_cpu_median": _median(rs, "total_speed_x_per_cpu"),
                    "runs": rs,
                }
        result["jobs"][job] = out
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for job, per_tree in result["jobs"].items():
            print(f"{job}:")
            for tree, s in per_tree.items():
                print(f"  {tree}: " + ", ".join(
                    f"{k}={v}" for k, v in s.items() if k != "runs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
