"""Benchmark of clusterfunk.sharding against the Go original's timing table.

Usage::

    python benchmarks/sharding.py [--json] [--shards 10000] [--nodes 50] [--repeat 7]

Method
------
* Per-call figures (``lookup_ns``, ``owner_ns``, ``int_key_ns``, ``str_key_ns``,
  ``bytes_key_ns``) use ``timeit``: ``--repeat`` runs of a loop of ``number`` calls, and
  the median of ``run_time / number``. The timeit loop itself costs a few ns per call;
  it is **included** (not subtracted) and reported separately as ``loop_overhead_ns``.
* Per-operation figures (``join_us``, ``leave_us``, ``encode_us``, ``decode_us``,
  ``init_us``) time single operations with ``time.perf_counter_ns`` and report the
  median over many runs. ``join``: the 10k/50 map gets one more node; ``leave``: one of
  its nodes leaves (different nodes in turn); ``init``: ``ShardMap(n).update(nodes)``
  from nothing (validation included); ``decode`` includes building the owner list
  used by lookups and decodes afresh (a ``bytearray``: ``ShardMap.decode`` keeps the
  last maps it decoded from ``bytes``, and a repeat of those is ``decode_kept_us``).
  All with weight 1 per shard, as in the Go benchmark (Go had dropped weights);
  ``weighted_*`` figures use random integer weights 1..10 for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clusterfunk.sharding import ShardMap

#: Go figure and goal per key (both in the unit of the key).
GOALS: dict[str, tuple[str, float, float]] = {
    "lookup_ns": ("Shard -> node lookup", 80, 40),
    "int_key_ns": ("Integer key -> shard", 27, 27),
    "str_key_ns": ("String key -> shard", 108, 100),
    "join_us": ("Redistribute: one node joins", 200, 200),
    "leave_us": ("Redistribute: one node leaves", 200, 200),
    "encode_us": ("Encode shard map for the log", 2000, 200),
    "decode_us": ("Decode shard map from the log", 3000, 200),
    "init_us": ("New shard map (init)", 450, 450),
}


def per_call_ns(stmt: str, env: dict[str, object], repeat: int, number: int) -> float:
    times = timeit.repeat(stmt, globals=env, number=number, repeat=repeat)
    return statistics.median(times) / number * 1e9


def per_op_us(fn: Callable[[int], object], runs: int) -> float:
    samples = []
    gc.collect()
    for i in range(runs):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e3


def run(n_shards: int, n_nodes: int, repeat: int) -> dict[str, float]:
    nodes = [f"node-{i:03d}" for i in range(n_nodes)]
    m = ShardMap.build(n_shards, nodes)
    number = 200_000
    env: dict[str, object] = {
        "lookup": m.lookup,
        "owner": m.owner,
        "sfi": m.shard_for_int,
        "sfk": m.shard_for_key,
        "s": n_shards // 3,
        "ik": 1234567890123,
        "sk": "user-1234567890a",  # 16 ASCII characters
        "bk": b"user-1234567890a",
    }
    out: dict[str, float] = {}
    out["loop_overhead_ns"] = per_call_ns("pass", env, repeat, number)
    out["lookup_ns"] = per_call_ns("lookup(s)", env, repeat, number)
    out["owner_ns"] = per_call_ns("owner(s)", env, repeat, number)
    out["int_key_ns"] = per_call_ns("sfi(ik)", env, repeat, number)
    out["str_key_ns"] = per_call_ns("sfk(sk)", env, repeat, number)
    out["bytes_key_ns"] = per_call_ns("sfk(bk)", env, repeat, number)

    runs = max(50, repeat * 30)
    joined = [*nodes, "node-new"]
    out["join_us"] = per_op_us(lambda i: m.update(joined), runs)
    leaves = [[x for x in nodes if x != nodes[(i * 7) % n_nodes]] for i in range(runs)]
    out["leave_us"] = per_op_us(lambda i: m.update(leaves[i]), runs)
    blob = m.encode()
    out["encode_us"] = per_op_us(lambda i: m.encode(), runs)
    fresh = bytearray(blob)
    out["decode_us"] = per_op_us(lambda i: ShardMap.decode(fresh), runs)
    out["decode_kept_us"] = per_op_us(lambda i: ShardMap.decode(blob), runs)
    out["init_us"] = per_op_us(lambda i: ShardMap(n_shards).update(nodes), runs)
    out["encoded_bytes"] = len(blob)

    rng = random.Random(1)
    weights = [rng.randint(1, 10) for _ in range(n_shards)]
    wm = ShardMap.build(weights, nodes)
    wblob = wm.encode()
    wruns = max(10, repeat * 3)
    out["weighted_join_us"] = per_op_us(lambda i: wm.update(joined), wruns)
    out["weighted_leave_us"] = per_op_us(lambda i: wm.update(leaves[i]), wruns)
    out["weighted_encode_us"] = per_op_us(lambda i: wm.encode(), wruns)
    wfresh = bytearray(wblob)
    out["weighted_decode_us"] = per_op_us(lambda i: ShardMap.decode(wfresh), wruns)
    out["weighted_init_us"] = per_op_us(lambda i: ShardMap(weights).update(nodes), wruns)
    return {k: round(v, 1) for k, v in out.items()}


def table(result: dict[str, float]) -> str:
    lines = [
        "| What | Go | Goal | clusterfunk (Python) | Met |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]
    for key, (label, go, goal) in GOALS.items():
        unit = key.rsplit("_", 1)[1]
        ours = result[key]
        met = "yes" if ours <= goal else "NO"
        shown = f"{ours:g} {unit}"
        if unit == "ns":
            net = round(ours - result["loop_overhead_ns"], 1)
            shown += f" ({net:g} net of loop)"
            if met == "NO" and net <= goal:
                met = "only net of loop"
        lines.append(f"| {label} | {go:g} {unit} | {goal:g} {unit} | {shown} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats (median)")
    args = parser.parse_args(argv)
    result = run(args.shards, args.nodes, args.repeat)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        py = sys.version.split()[0]
        print(f"{args.shards} shards on {args.nodes} nodes, medians; Python {py}")
        print(table(result))
        extra = {k: v for k, v in result.items() if k not in GOALS}
        print("other:", ", ".join(f"{k}={v:g}" for k, v in extra.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
