"""CPU cost of the Raft core's hot path, in one process, no network.

Three RaftCores (memory store, KV state machine) joined by an in-memory queue; every
message goes through the wire codec (encode + decode) as it would between
processes. Measures:

* sequential: one proposal at a time, delivered to commit on the leader (the CPU
  part of a commit round trip: propose, 2 AppendEntries, 2 responses, apply);
* batched: ``--batch`` proposals per leader step (what a pipelined client produces).

With ``--store sqlite`` every step commits a transaction (fsync, synchronous=FULL) on
each of the three stores, serially: a commit costs two fsyncs on its critical path
(leader, then a follower), as between processes.

    python benchmarks/raft_core.py [--ops 20000] [--batch 64] [--store sqlite] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

from clusterfunk import wire
from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.persist import apply_records
from clusterfunk.raft.sqlite_store import SQLiteStorage
from clusterfunk.raft.storage import MemoryStorage


def cluster(cfg: RaftConfig, store: str = "memory", trace: bool = False):
    ids = ["n1", "n2", "n3"]
    boot = {i: f"{i}:8300" for i in ids}
    tmp = tempfile.mkdtemp(prefix="raft-core-bench-")

    def storage(i):
        if store == "sqlite":
            return SQLiteStorage(os.path.join(tmp, f"{i}.db"))
        return MemoryStorage()

    stores = {i: storage(i) for i in ids}
    cores = {i: RaftCore(i, stores[i], kv.KVStore(), random.Random(i), cfg, boot)
             for i in ids}
    for c in cores.values():
        c.trace_applies = trace  # a node without a tracer skips raft.apply digests
        c.start(0.0)
    queue: list = []
    now = cores["n1"].next_deadline()

    def flush(i):
        # what the driver does with a synchronous persister: write and sync each
        # Output's records, send, report the batch durable to the core
        core = cores[i]
        out = core.drain()
        while out is not None:
            if out.persist:
                apply_records(stores[i], out.persist)
                if out.persist_token:
                    stores[i].sync()
            for s in out.sends:
                queue.append((s.dest.partition(":")[0], f"{i}:8300", wire.encode(s.msg)))
            if not out.persist_token:
                break
            core.on_persisted(now, out.persist_token)
            out = core.drain()

    def pump():
        while queue:
            d, src, data = queue.pop(0)
            cores[d].on_message(now, src, wire.decode(data), True)
            flush(d)

    for i in ids:
        flush(i)
    cores["n1"].on_tick(now)
    flush("n1")
    pump()
    assert cores["n1"].role == "leader"
    return cores, flush, pump, now


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", action="store_true",
                    help="emit raft.apply records (a sha256 per entry), as under a tracer")
    args = ap.parse_args()
    cfg = RaftConfig(election_timeout=1000.0, heartbeat_interval=500.0, snapshot_threshold=0)
    cores, flush, pump, now = cluster(cfg, args.store, args.trace)
    leader = cores["n1"]
    cmd = kv.encode_put("key", "value-0123456789")
    lat = []
    for _ in range(args.ops):
        t0 = time.perf_counter()
        idx, _ = leader.propose(now, cmd)
        flush("n1")
        pump()
        lat.append(time.perf_counter() - t0)
        assert leader.commit_index >= idx
    seq_us = statistics.median(lat) * 1e6
    cores, flush, pump, now = cluster(cfg, args.store, args.trace)
    leader = cores["n1"]
    n = 0
    t0 = time.perf_counter()
    while n < args.ops * 5:
        leader.propose_many(now, [cmd] * args.batch) if args.batch > 1 else \
            leader.propose(now, cmd)
        flush("n1")
        pump()
        n += args.batch
    dt = time.perf_counter() - t0
    res = {
        "sequential_commit_cpu_p50_us": round(seq_us, 1),
        "sequential_commit_cpu_p99_us": round(sorted(lat)[int(len(lat) * 0.99)] * 1e6, 1),
        "batched_commits_per_s": round(n / dt),
        "batch": args.batch,
        "store": args.store,
        "trace": args.trace,
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:32} {v}")


if __name__ == "__main__":
    main()
