"""Raft over loopback: N ``clusterfunk raft-node`` processes and a client process.

* sequential commit latency: one ``put`` at a time (client -> leader -> quorum
  replication -> apply -> reply), p50 / p99 in microseconds;
* pipelined throughput: ``--pipeline K`` requests in flight on one connection;
  commits per second over the whole run, and the latency of requests under that
  load (p50 / p99).

Every figure includes the client protocol round trip (one TCP hop each way), so it
is the latency an application sees, not just the Raft round. The JSON also carries
the CPU time per commit of each node process (n1 first) and of the client, for
both phases (``seq_cpu_us_per_op``, ``cpu_us_per_op``; Linux ``/proc``, 10 ms
resolution, so meaningful over a few thousand commits).

    python benchmarks/raft_loopback.py --nodes 3 --store memory|sqlite [--ops N]
        [--pipeline K] [--pipelined-ops M] [--json]

Processes are started on free loopback ports and always stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from clusterfunk.raft import kv
from clusterfunk.raft.client import SyncClient
from clusterfunk.runtime.net import free_port


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def start_cluster(
    n: int, store: str, data_dir: str, profile: str | None = None, batch: bool = True
) -> tuple[list[subprocess.Popen], dict]:
    raft = {f"n{i}": f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}
    client = {k: f"127.0.0.1:{free_port()}" for k in raft}
    peers = ",".join(f"{k}={v}" for k, v in raft.items())
    procs = []
    for sid in raft:
        prof = ["-m", "cProfile", "-o", os.path.join(profile, f"{sid}.prof")] if profile else []
        cmd = [
            sys.executable,
            *prof,
            "-m",
            "clusterfunk",
            "raft-node",
            "--insecure",
            "--id",
            sid,
            "--bind",
            raft[sid],
            "--peers",
            peers,
            "--data-dir",
            os.path.join(data_dir, sid),
            "--store",
            store,
            "--client-bind",
            client[sid],
            *([] if batch else ["--no-batch"]),
        ]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("a raft-node process failed to start")
    return procs, client


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="cf-raft-bench-") as tmp:
        procs, client = start_cluster(args.nodes, args.store, tmp, args.profile, args.batch)
        try:
            c = SyncClient(client, timeout=10.0)
            c.request(kv.encode_put("warm", "up"), deadline=time.monotonic() + 15)
            value = b"x" * args.value_bytes
            for i in range(args.warmup):
                c.request(kv.encode_put(f"w{i % 100}", value))
            lat = []
            scpu0 = [cpu_seconds(p.pid) for p in procs]
            sme0 = time.process_time()
            for i in range(args.ops):
                cmd = kv.encode_put(f"k{i % 1000}", value)
                t0 = time.perf_counter()
                c.request(cmd)
                lat.append(time.perf_counter() - t0)
            sme = time.process_time() - sme0
            scpu = [cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, scpu0, strict=True)]
            lat.sort()
            cmds = [kv.encode_put(f"p{i % 1000}", value) for i in range(args.pipelined_ops)]
            cpu0 = [cpu_seconds(p.pid) for p in procs]
            me0 = time.process_time()
            t0 = time.perf_counter()
            replies = c.pipeline(cmds, args.pipeline)
            wall = time.perf_counter() - t0
            me = time.process_time() - me0
            cpu = [cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, cpu0, strict=True)]
            plat = sorted(r[1] - r[0] for r in replies)
            c.close()
        finally:
            stop(procs)
    return {
        "nodes": args.nodes,
        "store": args.store,
        "p50_us": round(statistics.median(lat) * 1e6, 1),
        "p99_us": round(pct(lat, 0.99) * 1e6, 1),
        "ops_per_s": round(len(replies) / wall, 1),
        "pipelined_p50_us": round(statistics.median(plat) * 1e6, 1),
        "pipelined_p99_us": round(pct(plat, 0.99) * 1e6, 1),
        "pipeline": args.pipeline,
        "sequential_ops": args.ops,
        "pipelined_ops": args.pipelined_ops,
        "value_bytes": args.value_bytes,
        "batching": args.batch,
        # CPU per sequential commit (us): each node process (n1 first), and the client
        "seq_cpu_us_per_op": [round(x / len(lat) * 1e6, 1) for x in scpu],
        "seq_client_cpu_us_per_op": round(sme / len(lat) * 1e6, 1),
        # CPU per pipelined commit (us): each node process (n1 first), and the client
        "cpu_us_per_op": [round(x / len(replies) * 1e6, 2) for x in cpu],
        "client_cpu_us_per_op": round(me / len(replies) * 1e6, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    ap.add_argument("--ops", type=int, default=2000, help="sequential commits measured")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--pipeline", type=int, default=256, help="requests in flight")
    ap.add_argument("--pipelined-ops", type=int, default=50000)
    ap.add_argument("--value-bytes", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help="nodes put each client command in its own log entry",
    )
    ap.add_argument("--profile", metavar="DIR", help="run the nodes under cProfile, into DIR")
    args = ap.parse_args()
    res = run(args)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"raft loopback: {res['nodes']} nodes, {res['store']} store\n"
            f"  sequential commit: p50 {res['p50_us']} us, p99 {res['p99_us']} us "
            f"({res['sequential_ops']} ops)\n"
            f"  pipelined (window {res['pipeline']}): {res['ops_per_s']} commits/s, "
            f"p50 {res['pipelined_p50_us']} us, p99 {res['pipelined_p99_us']} us "
            f"({res['pipelined_ops']} ops)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
