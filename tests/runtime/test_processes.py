"""Several real OS processes ping each other over loopback UDP and TCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.runtime.helpers import free_port


def test_three_processes_ping_each_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    peers = ",".join(addrs)
    procs: list[subprocess.Popen[str]] = []
    env = dict(os.environ, PYTHONHASHSEED="random")
    try:
        for i, addr in enumerate(addrs, 1):
            # n1 goes through the main CLI, the others through the module's own entry.
            entry = ["clusterfunk"] if i == 1 else ["clusterfunk.cli.ping"]
            cmd = [
                sys.executable,
                "-m",
                *entry,
                "ping-node",
                "--id",
                f"n{i}",
                "--bind",
                addr,
                "--peers",
                peers,
                "--duration",
                "2.5",
                "--interval",
                "0.03",
                "--stream-every",
                "3",
                "--trace",
                str(tmp_path / f"n{i}.jsonl"),
            ]
            procs.append(
                subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                )
            )
        results = []
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, r in enumerate(results, 1):
        assert r["id"] == f"n{i}" and r["address"] == addrs[i - 1]
        assert r["pongs"] > 0, r
        assert r["hellos_back"] > 0, r
        assert r["unexpected_pongs"] == 0 and r["malformed"] == 0
        assert 0 < r["rtt_median"] < 0.5
        trace = [json.loads(line) for line in (tmp_path / f"n{i}.jsonl").read_text().splitlines()]
        assert trace and all(list(rec)[:3] == ["t", "node", "ev"] for rec in trace)
        assert sum(rec["ev"] == "ping.rtt" for rec in trace) == r["pongs"]
    # Every process was pinged by the others: it answered pings from both peers.
    total_pongs = sum(r["pongs"] for r in results)
    assert total_pongs >= 3
