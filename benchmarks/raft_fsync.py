"""The disk's floor for the SQLite store: a bare sqlite3 commit loop (WAL,
synchronous=FULL, one small row per transaction) and a bare ``os.fsync`` loop, in
the directory given (default: the system temp directory, where
``raft_loopback.py`` puts its databases).

    python benchmarks/raft_fsync.py [--dir DIR] [--n N] [--json]

A sequential Raft commit on the SQLite store needs at least one such durable
commit on its critical path (the leader's and the fastest follower's run in
parallel), so its p50 cannot beat the p50 printed here.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time


def pct(values: list[float], q: float) -> float:
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def sqlite_loop(path: str, n: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v BLOB)")
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 32))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    db.close()
    return sorted(out)


def fsync_loop(path: str, n: int) -> list[float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 64)
            os.fsync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cf-fsync-", dir=args.dir) as tmp:
        sq = sqlite_loop(os.path.join(tmp, "t.db"), args.n)
        fs = fsync_loop(os.path.join(tmp, "f.bin"), args.n)
    res = {
        "dir": args.dir or tempfile.gettempdir(),
        "sqlite_commit_p50_us": round(statistics.median(sq) * 1e6, 1),
        "sqlite_commit_p99_us": round(pct(sq, 0.99) * 1e6, 1),
        "fsync_p50_us": round(statistics.median(fs) * 1e6, 1),
        "fsync_p99_us": round(pct(fs, 0.99) * 1e6, 1),
        "n": args.n,
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"disk under {res['dir']}: sqlite WAL synchronous=FULL commit p50 "
            f"{res['sqlite_commit_p50_us']} us (p99 {res['sqlite_commit_p99_us']}); "
            f"write+fsync p50 {res['fsync_p50_us']} us (p99 {res['fsync_p99_us']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
