"""``clusterfunk cluster-node``: two processes on loopback agree on a map."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from clusterfunk.runtime.net import free_port


def _start(node_id: str, ports: list[int], join: str | None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "clusterfunk",
        "cluster-node",
        "--insecure",
        "--id",
        node_id,
        "--shards",
        "100",
        "--gossip-port",
        str(ports[0]),
        "--raft-port",
        str(ports[1]),
        "--coord-port",
        str(ports[2]),
        "--management-port",
        "0",
        "--in-memory",
        "--endpoint",
        f"web=127.0.0.1:{ports[0] + 1}",
    ]
    if join:
        cmd += ["--join", join]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until_operational(p: subprocess.Popen, nodes: list[str], timeout: float = 20.0) -> list:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        rec = json.loads(line)
        lines.append(rec)
        if rec["state"] == "operational" and rec["nodes"] == nodes:
            return lines
    raise AssertionError(f"never operational with {nodes}: {lines}")


def test_two_processes_form_a_cluster():
    pa = [free_port() for _ in range(3)]
    pb = [free_port() for _ in range(3)]
    a = _start("a", pa, None)
    b = None
    try:
        first = json.loads(a.stdout.readline())
        assert first["node"] == "a" and first["state"] in ("starting", "joining")
        b = _start("b", pb, f"127.0.0.1:{pa[0]}")
        lines_b = _until_operational(b, ["a", "b"])
        assert lines_b[-1]["leader"] == "a"
        _until_operational(a, ["a", "b"])
    finally:
        for p in (b, a):
            if p is not None:
                p.send_signal(signal.SIGINT)  # graceful: leave, then exit 0
        for p in (b, a):
            if p is not None:
                try:
                    assert p.wait(timeout=10) == 0, p.stderr.read()
                finally:
                    if p.poll() is None:
                        p.kill()
