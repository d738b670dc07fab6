"""The determinism contract: same seed and inputs -> byte-identical trace in a
fresh process, under any PYTHONHASHSEED."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterfunk.sim.workload import load_workload

PROTOCOLS = ["ping", "gossip", "raft", "cluster"]


def test_every_workload_loads() -> None:
    for p in PROTOCOLS:
        assert load_workload(p) is not None


def run_in_subprocess(tmp: Path, hashseed: str, args: list[str]) -> bytes:
    trace = tmp / f"trace-{hashseed}.jsonl"
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    proc = subprocess.run(
        [sys.executable, "-m", "clusterfunk", "simulate", *args, "--trace", str(trace)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return trace.read_bytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_seed_gives_byte_identical_trace_under_any_hash_seed(
    tmp_path: Path, protocol: str
) -> None:
    duration = "60" if protocol == "ping" else "20"
    args = [
        "--protocol",
        protocol,
        "--nodes",
        "20",
        "--duration",
        duration,
        "--seed",
        "42",
        "--loss",
        "0.01",
        "--nemesis",
        "all",
        "--crash",
        "n7@5",
        "--restart",
        "n7@12",
    ]
    if protocol == "ping":
        args.append("--trace-net")
    a = run_in_subprocess(tmp_path, "0", args)
    b = run_in_subprocess(tmp_path, "12345", args)
    assert len(a) > 10_000
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    c = run_in_subprocess(tmp_path, "7", [*args[:7], "43", *args[8:]])
    assert c != a  # and the seed matters
