"""Zeroconf discovery between real processes, inside a network namespace made by the
test (so no multicast leaves it); skipped, with the reason, where one cannot be made."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the namespace: node a bootstraps and announces itself; node b finds its
# seed by mDNS; then `ctl --discover` finds a management API. Prints one JSON result.
INNER = r"""
import json, os, subprocess, sys, time
PY = [sys.executable, "-m", "clusterfunk"]
MDNS = ["--mdns", "--mdns-interface", "127.0.0.1", "--in-memory", "--insecure", "--shards", "10",
        "--gossip-port", "0", "--raft-port", "0", "--coord-port", "0",
        "--management-port", "0", "--log-level", "warning"]
procs = []
def start(node, *extra):
    p = subprocess.Popen([*PY, "cluster-node", "--id", node, *MDNS, *extra],
                         stdout=subprocess.PIPE, text=True)
    procs.append(p)
    return p
def until_operational(p, nodes, timeout=25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        rec = json.loads(line)
        if rec["state"] == "operational" and rec["nodes"] == nodes:
            return rec
    raise SystemExit(f"never operational with {nodes}")
try:
    a = start("a")
    until_operational(a, ["a"])
    b = start("b", "--join", "mdns")
    rb = until_operational(b, ["a", "b"])
    ra = until_operational(a, ["a", "b"])
    r = subprocess.run([*PY, "ctl", "--discover", "--mdns-interface", "127.0.0.1",
                        "status", "--json"], capture_output=True, text=True, timeout=60)
    print(json.dumps({"a": ra, "b": rb, "ctl_rc": r.returncode, "ctl_err": r.stderr,
                      "status": json.loads(r.stdout) if r.returncode == 0 else None}))
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=15)
"""


def _namespace_cmd() -> list[str] | None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return None
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return [unshare, "-n", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']


@pytest.mark.slow
def test_a_node_finds_its_seed_and_ctl_finds_a_node_by_mdns():
    ns = _namespace_cmd()
    if ns is None:
        reason = "cannot make a network namespace here (needs unshare -n, ip, root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([*ns, sys.executable, "-c", INNER], capture_output=True, text=True,
                       timeout=90, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["b"]["nodes"] == ["a", "b"] and res["a"]["nodes"] == ["a", "b"]
    assert res["ctl_rc"] == 0, res["ctl_err"]
    st = res["status"]
    assert st["node"] in ("a", "b") and st["nodes"] == ["a", "b"]  # whichever answered first
