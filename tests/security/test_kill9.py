"""Issue 11, "What must show": SIGKILL loops with real processes and SQLite stores
(``benchmarks/kill9.py``, a small count here; the benchmark runs 50 + 20 kills).

Raft KV: three ``raft-node --store sqlite`` processes under four client threads;
random nodes (every third kill the leader the clients name) are SIGKILLed and
restarted. Every acknowledged write is read back, the recorded history is
linearizable, the traces pass the Raft safety checker and every node comes back.

Cluster: three ``cluster-node --data-dir`` processes; random nodes (the leader
included) are SIGKILLed and restarted; afterwards all three are operational with one
committed map they agree on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.kill9 import cluster_loop, raft_loop

pytestmark = pytest.mark.slow


def test_raft_kv_kill9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rep = raft_loop(10, nodes=3, threads=4, seed=7, interval=(0.2, 0.5),
                    restart_delay=(0.1, 0.4), root=tmp_path)
    assert rep["kills"] == 10 and rep["leader_kills"] >= 1
    assert rep["all_alive"], rep
    assert rep["acknowledged_unique_writes"] > 50, rep
    assert rep["missing_count"] == 0, rep["missing_acknowledged"]
    assert rep["linearizable"] is True, (rep["linearizability_problems"],
                                         rep["undecided_keys"])
    assert rep["raft_safety_violations"] == [], rep["raft_safety_violations"]
    assert rep["elections"] >= 2


def test_cluster_kill9_every_node_returns_to_one_map(tmp_path: Path) -> None:
    rep = cluster_loop(4, seed=3, root=tmp_path, settle_timeout=30)
    assert rep["kills"] == 4 and rep["leader_kills"] >= 1
    assert rep["not_recovered"] == 0, rep
    assert rep["all_alive"] and rep["all_operational"] and rep["one_map"], rep["final"]
    assert {tuple(v["nodes"]) for v in rep["final"].values()} == {("a", "b", "c")}
