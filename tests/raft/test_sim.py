"""The raft simulation workload: seeded nemesis runs, determinism, and the checkers
catching a broken state machine end to end."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

import pytest

from clusterfunk.raft import kv
from clusterfunk.sim.nemesis import KINDS, Nemesis, NemesisConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.raft import RaftWorkload
from clusterfunk.trace import Tracer


def workload(**kw) -> RaftWorkload:
    opts = dict(
        nodes=5,
        duration=40.0,
        clients=3,
        keys=3,
        op_rate=20.0,
        read_index=0.5,
        election_timeout=1.0,
        op_timeout=3.0,
        check_every=0.5,
    )
    opts.update(kw)
    return RaftWorkload(argparse.Namespace(**opts))


def nemesis_run(seed: int, nodes: int = 5, duration: float = 60.0, keep: bool = False):
    tracer = Tracer(lambda: 0.0, keep=keep)
    sim = Simulation(seed, tracer=tracer)
    wl = workload(nodes=nodes, duration=duration)
    wl.setup(sim)
    nem = Nemesis(
        sim,
        wl.fault_targets(sim),
        NemesisConfig(kinds=KINDS, warmup=2.0, mean_gap=1.0, min_duration=0.5, max_duration=5.0),
    )
    nem.start(until=duration - 5)
    sim.start()
    sim.run_until(duration)
    summary = wl.finish(sim)
    return sim, wl, nem, summary


@pytest.mark.parametrize("seed", list(range(1, 13)))
def test_seeded_nemesis_runs_are_safe_live_and_linearizable(seed):
    _sim, wl, nem, summary = nemesis_run(seed, nodes=3 if seed % 2 else 5)
    assert len(nem.faults) >= 5, nem.faults  # the nemesis really did something
    assert summary["violations"] == [], summary["violations"]
    assert summary["linearizable"] is True
    assert summary["ops"]["ok"] > 50
    assert summary["leader_elections"] >= 1
    assert wl.heal_and_check() == []


def test_leader_crash_gives_a_new_leader_and_keeps_acknowledged_writes():
    sim = Simulation(11)
    wl = workload(nodes=5)
    wl.setup(sim)
    sim.run_until(5.0)
    first = wl.leader()
    assert first is not None
    acked_before = len(wl.acked)
    assert acked_before > 10
    term = sim.app(first).core.term
    sim.crash(first)
    sim.run_for(10.0)
    second = wl.leader()
    assert second is not None and second != first
    assert sim.app(second).core.term > term
    assert wl.lost_acknowledged(second) == []
    assert len(wl.acked) > acked_before  # clients found the new leader
    summary = wl.finish(sim)
    assert summary["violations"] == []
    assert summary["leader_elections"] >= 2


class StaleKV(kv.KVStore):
    """A broken state machine: a get returns the value *before* the last put."""

    def __init__(self) -> None:
        super().__init__()
        self.previous: dict[str, object] = {}

    def apply(self, index, command):
        op, key, _args = kv.decode_command(command)
        if op == "put":
            self.previous[key] = self.data.get(key)
        if op == "get":
            self.applied = index
            return self.previous.get(key, self.data.get(key))
        return super().apply(index, command)


def test_linearizability_checker_catches_a_broken_state_machine(monkeypatch):
    monkeypatch.setattr(kv, "KVStore", StaleKV)
    sim = Simulation(3)
    wl = workload(nodes=3, read_index=0.0)
    wl.setup(sim)
    sim.run_until(10.0)
    summary = wl.finish(sim)
    assert summary["linearizable"] is False
    assert any(v.startswith("linearizability:") for v in summary["violations"])


def test_trace_has_the_kv_events_with_their_fields():
    sim, _wl, _nem, _summary = nemesis_run(7, nodes=3, duration=15.0, keep=True)
    calls = sim.tracer.of("kv.call")
    rets = sim.tracer.of("kv.return")
    assert calls and rets and len(calls) - len(rets) in (0, 1, 2, 3)
    for r in calls:
        assert list(r)[:6] == ["t", "node", "ev", "client", "op", "key"]
        assert r["node"] == r["client"]
        assert r["op"] in ("get", "put", "delete", "cas")
        assert ("value" in r) == (r["op"] in ("put", "cas"))
        assert ("expected" in r) == (r["op"] == "cas")
    for r in rets:
        assert r["outcome"] in ("ok", "fail", "unknown")
        assert ("result" in r) == (r["outcome"] == "ok")
    roles = sim.tracer.of("raft.role")
    applies = sim.tracer.of("raft.apply")
    assert roles and applies
    assert all(len(a["digest"]) >= 16 for a in applies)


_RUN = """
import sys
from clusterfunk.cli import main
sys.exit(main(["simulate", "--protocol", "raft", "--nodes", "3", "--seed", "5",
               "--duration", "12", "--nemesis", "all", "--trace", sys.argv[1]]))
"""


def test_same_seed_same_trace_across_processes_and_hash_seeds(tmp_path):
    digests = []
    for i, hashseed in enumerate(("1", "2")):
        path = tmp_path / f"t{i}.jsonl"
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        proc = subprocess.run(
            [sys.executable, "-c", _RUN, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        data = path.read_bytes()
        assert b'"ev":"kv.return"' in data and b'"ev":"raft.apply"' in data
        digests.append(hashlib.sha256(data).hexdigest())
        last = json.loads(data.splitlines()[-1])
        assert last["ev"] == "sim.end"
    assert digests[0] == digests[1]


def test_simulate_cli_raft_reports_checks(capsys):
    from clusterfunk.cli import main

    rc = main(
        [
            "simulate",
            "--protocol",
            "raft",
            "--nodes",
            "3",
            "--seed",
            "9",
            "--duration",
            "10",
            "--clients",
            "2",
            "--keys",
            "2",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    wl = out["workload"]
    assert wl["linearizable"] is True and out["violations"] == []
    assert wl["ops"]["ok"] > 20 and wl["leader_elections"] >= 1
    assert wl["safety"]["log_checks"] > 5


def test_simulate_cli_exit_status_fails_on_violation(monkeypatch, capsys):
    from clusterfunk.cli import main

    monkeypatch.setattr(kv, "KVStore", StaleKV)
    rc = main(
        [
            "simulate",
            "--protocol",
            "raft",
            "--nodes",
            "3",
            "--seed",
            "9",
            "--duration",
            "10",
            "--read-index",
            "0",
        ]
    )
    assert rc == 1
    assert "linearizability" in capsys.readouterr().out


def test_single_node_cluster_answers_every_operation():
    sim = Simulation(4)
    wl = workload(nodes=1, duration=15.0)
    wl.setup(sim)
    sim.run_until(15.0)
    summary = wl.finish(sim)
    assert summary["violations"] == []
    assert summary["ops"]["ok"] > 100 and summary["ops"]["unknown"] == 0
