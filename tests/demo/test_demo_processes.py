"""``clusterfunk demo`` with real processes on loopback: node processes running the
demo service, routing clients, every node answering, a clean stop; and the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterfunk.cli.demo import NodeStats, Stats, pct, render
from clusterfunk.demo.launch import node_argv


@pytest.mark.slow
def test_demo_command_serves_requests_on_every_node(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "clusterfunk", "demo", "--nodes", "2", "--clients", "1",
           "--shards", "50", "--duration", "3", "--json", "--workdir", str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["nodes"] == 2 and out["seconds"] >= 3
    assert out["ok"] > 0 and out["failed"] == 0
    # requests went straight to both owners (the shards are split between them)
    assert set(out["ok_by_node"]) == {"n1", "n2"}
    assert all(v > 0 for v in out["ok_by_node"].values())
    assert 0 < out["p50_us"] <= out["p99_us"]
    # the nodes ran as processes with their own logs, and were stopped
    assert {f.name for f in tmp_path.iterdir()} >= {"n1.err", "n2.err"}


def test_node_command_line() -> None:
    argv = node_argv("n2", {"gossip": 1, "raft": 2, "coord": 3, "app": 4}, ["127.0.0.1:1"], 50)
    assert argv[argv.index("--app") + 1] == "demo"
    assert argv[argv.index("--app-port") + 1] == "4"
    assert argv[argv.index("--join") + 1] == "127.0.0.1:1"
    assert "--in-memory" in argv and "--insecure" in argv


class FakeNode:
    def __init__(self, state: str, role: str, exited: bool = False) -> None:
        self.state, self.role, self.exited = state, role, exited


class FakeCluster:
    nodes = {"n1": FakeNode("operational", "leader"), "n2": FakeNode("", "", exited=True)}

    def live(self) -> list[FakeNode]:
        return [self.nodes["n1"]]


def test_table_rows_per_node() -> None:
    from rich.console import Console

    stats = Stats()
    for i in range(100):
        stats.ok("n1", (i + 1) / 1000)
    stats.fail("timeout")
    _interval, window, failed = stats.roll()
    table = render(FakeCluster(), {"n1": 7}, 2.0, window, failed, stats)
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    n1 = next(line for line in text.splitlines() if "n1" in line)
    assert "operational" in n1 and "leader" in n1
    assert "50" in n1.split()  # 100 answers in 2 s
    assert "50.00" in n1 and "99.00" in n1  # p50 / p99 in ms
    assert "exited" in next(line for line in text.splitlines() if "n2" in line)
    assert "failed in the last 2.0 s: 1" in text
    assert pct([], 0.5) is None and pct([3.0, 1.0, 2.0], 0.5) == 2.0
    assert stats.roll()[1] == {} and isinstance(NodeStats(), NodeStats)
