"""The opt-in nemesis kinds that find the last two Raft mutants: ``stall`` (a node's
outgoing stream frames held back, then delivered in order) and ``vote-crash`` (a
voter crashes within 2 ms of answering a RequestVote)."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from clusterfunk.sim import runner
from clusterfunk.sim.nemesis import BOUNCE_DOWN, KINDS, STALL_HOLD, Fault, parse_kinds
from clusterfunk.sweep import shrink as sh
from clusterfunk.sweep import sweep as sw
from tests.sim.helpers import Probe, recorder_sim, send


def test_stall_holds_a_nodes_frames_and_delivers_them_in_order() -> None:
    sim, drivers = recorder_sim(3, seed=2)
    sim.at(1.0, sim.stall, "n1", 3.0)
    for i in range(20):  # 1.0 .. 2.9 s: all held until 3.0
        sim.at(1.0 + i * 0.1, send, drivers, "n1", "n2", Probe(i, 1.0 + i * 0.1), True)
    sim.at(1.5, send, drivers, "n1", "n3", Probe(100, 1.5), False)  # a datagram: not held
    sim.at(1.5, send, drivers, "n2", "n1", Probe(200, 1.5), True)  # what n1 receives: not held
    sim.at(3.5, send, drivers, "n1", "n2", Probe(20, 3.5), True)  # after the stall
    sim.run_until(10)
    got = [(round(t, 6), msg.seq) for t, _src, msg, _ in sim.app("n2").received
           if msg.seq < 100]
    assert [seq for _t, seq in got] == list(range(21))
    assert {t for t, seq in got if seq < 20} == {3.0}
    assert got[-1][0] > 3.5
    assert [round(t - m.sent, 4) < 0.01 for t, _s, m, _ in sim.app("n3").received] == [True]
    assert [round(t - m.sent, 4) < 0.01 for t, _s, m, _ in sim.app("n1").received] == [True]


def _run(opts: argparse.Namespace) -> tuple[list[Fault], list[dict[str, Any]]]:
    out, schedule = io.StringIO(), []  # type: ignore[var-annotated]
    runner.run(argparse.Namespace(**{**vars(opts), "trace": None}), out=out,
               schedule=schedule, err=io.StringIO())
    return schedule, [json.loads(line) for line in out.getvalue().splitlines() if line]


def test_new_kinds_are_opt_in() -> None:
    for kind in ("stall", "vote-crash"):
        assert kind not in KINDS and kind not in parse_kinds("harsh")
    assert parse_kinds("harsh,stall")[-1] == "stall"


def test_stall_and_vote_crash_faults_replay_as_scenario_events() -> None:
    """A stall holds its target's frames for 1.5-4 s (sim.stall with until); a
    vote-crash crashes a voter within 2 ms of its ``raft.role`` follower record of a
    candidate's term and restarts it within 1 s; both replay through shrink byte for
    byte."""
    argv = [*sw.SweepSpec("raft", 3, 40, "crash,stall,vote-crash", extra=(
        "--nemesis-overlap", "2", "--nemesis-gap", "2", "--pre-vote", "off")).argv(4)]
    opts = sw.resolve_argv(argv)
    faults, trace = _run(opts)
    kinds = {f.kind for f in faults}
    assert kinds == {"crash", "stall", "vote-crash"}, kinds
    for f in faults:
        if f.kind == "stall":
            assert STALL_HOLD[0] <= f.until - f.at <= STALL_HOLD[1]
            assert {"t": round(f.at, 6), "node": "sim", "ev": "sim.stall", "target": f.target,
                    "until": round(f.until, 6)} in trace
        elif f.kind == "vote-crash":
            assert BOUNCE_DOWN[0] <= f.until - f.at <= BOUNCE_DOWN[1]
            took = [r["t"] for r in trace if r["ev"] == "raft.role" and r["node"] == f.target
                    and r["role"] == "follower" and r["t"] <= f.at]
            assert took and 0 <= f.at - took[-1] <= 0.002 + 1e-6
            assert {"t": round(f.at, 6), "node": "sim", "ev": "sim.crash",
                    "target": f.target} in trace
    first = runner.run_one(opts)
    cand = sh.Candidate({"protocol": "raft", "nodes": 3, "duration": 40, "seed": 4,
                         "pre_vote": "off"}, first.schedule)
    assert sh.run_candidate(cand).body_sha256 == first.body_sha256
