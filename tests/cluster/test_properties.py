"""Hypothesis: random crash / restart / partition schedules never break the checkers,
and the cluster converges once the faults stop. Plus determinism of the trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.cluster.helpers import make

NAMES = ["n1", "n2", "n3", "n4", "n5"]

fault = st.tuples(
    st.sampled_from(["crash", "partition"]),
    st.sampled_from(NAMES),
    st.floats(min_value=3.0, max_value=40.0),  # start
    st.floats(min_value=1.0, max_value=15.0),  # duration
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), faults=st.lists(fault, min_size=1, max_size=4))
# found by Hypothesis: a partitioned voter is removed; after the heal it comes back only
# when gossip's reconnect merges the sides (tens of seconds)
@example(seed=211, faults=[("crash", "n4", 8.0, 10.0), ("partition", "n2", 9.0, 12.0)])
def test_random_fault_schedules_keep_the_invariants(seed, faults):
    # a healed partition merges through gossip's reconnect (30 s on each side)
    sim, wl = make(seed=seed, keep=False, settle=65.0)
    for kind, target, start, dur in faults:
        if kind == "crash":
            sim.at(start, sim.crash, target)
            sim.at(start + dur, sim.restart, target)
        else:
            sim.at(start, sim.partition, [[target]])
            sim.at(start + dur, sim.heal)
    end = max(s + d for _k, _t, s, d in faults) + 70.0
    sim.run_until(end)
    summary = wl.finish(sim)
    assert summary["violations"] == []
    assert summary["settled_check"] == "applied"
    assert summary["reshards"] >= 1


def _trace(seed: int) -> list[dict]:
    sim, _wl = make(seed=seed, keep=True)
    sim.at(8.0, sim.crash, "n2")
    sim.at(15.0, sim.restart, "n2")
    sim.run_until(25.0)
    return sim.tracer.records


def test_same_seed_same_trace_in_process():
    a = _trace(21)
    b = _trace(21)
    assert a == b
    assert any(r["ev"] == "cluster.shardmap" for r in a)


def test_same_seed_same_trace_across_processes(tmp_path):
    outs = []
    for hashseed in ("1", "4242"):
        path = tmp_path / f"t{hashseed}.jsonl"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        subprocess.run(
            [sys.executable, "-m", "clusterfunk", "simulate", "--protocol", "cluster",
             "--nodes", "5", "--shards", "500", "--duration", "20", "--seed", "9",
             "--crash", "n3@6", "--restart", "n3@12", "--trace", str(path)],
            check=True, env=env, capture_output=True,
        )
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
    lines = [json.loads(x) for x in outs[0].splitlines()]
    assert any(r["ev"] == "cluster.ack" for r in lines)


def test_simulate_cli_options(tmp_path):
    """``clusterfunk simulate --protocol cluster`` wiring: --voters and --shards reach the
    workload, the summary reports them and the run exits 0 without violations."""
    out = subprocess.run(
        [sys.executable, "-m", "clusterfunk", "simulate", "--protocol", "cluster",
         "--nodes", "7", "--shards", "700", "--voters", "5", "--gossip-profile", "local",
         "--duration", "15", "--settle", "5", "--json"],
        check=True, capture_output=True, text=True,
    )
    summary = json.loads(out.stdout)
    w = summary["workload"]
    assert summary["violations"] == []
    assert w["shards"] == 700 and len(w["voters"]) == 5
    assert w["final_map"]["nodes"] == 7 and w["settled_check"] == "applied"


def test_trace_is_causal_per_node():
    """The glue never nests one driver step in another: a node's ``cluster.shardmap``
    record for index i comes after its ``raft.apply`` of i, and its ``raft.apply``
    records are contiguous and increasing (per incarnation)."""
    records = _trace(33)
    applied: dict[str, set[int]] = {}
    last: dict[str, int] = {}
    for r in records:
        node = r["node"]
        if r["ev"] == "sim.crash":
            applied.pop(r["target"], None)
            last.pop(r["target"], None)
        elif r["ev"] == "raft.apply":
            if node in last:
                assert r["index"] == last[node] + 1, r
            last[node] = r["index"]
            applied.setdefault(node, set()).add(r["index"])
        elif (r["ev"] == "cluster.shardmap" and r["phase"] == "proposed" and r["t"] > 0
              and node in applied and min(applied[node]) <= r["index"]):
            assert r["index"] in applied[node], r
    assert sum(1 for r in records if r["ev"] == "cluster.shardmap") > 5
