"""``clusterfunk shrink``: the nemesis schedule as explicit faults, and shrinking."""

from __future__ import annotations

import argparse
import io
import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from clusterfunk.cli import main
from clusterfunk.sim import runner
from clusterfunk.sim import scenario as scenario_mod
from clusterfunk.sim.nemesis import KINDS
from clusterfunk.sweep import shrink as sh
from clusterfunk.sweep import sweep as sw


def test_violation_kind() -> None:
    k = sh.violation_kind
    assert k("t=3.25: Election Safety: n1 and n2 are both leaders of term 4") == "Election Safety"
    assert k("linearizability: key 'k1' is not linearizable; x") == "linearizability"
    assert k("t=9.0: false positive: n2 declared live n3 dead (incarnation 1)") == \
        "false positive"
    assert k("t=1.0: n3 applied index 5 but the next in order was 4") == \
        "applied index but the next"
    assert k("t=2.0: map at 12 committed before ['n2'] acked it") == \
        k("t=7.5: map at 40 committed before ['n4', 'n5'] acked it")


def _materialised(protocol: str, nodes: int, duration: float, seed: int,
                  nemesis: str = "all") -> tuple[list, bool]:
    opts = sw.resolve_argv(sw.SweepSpec(protocol, nodes, duration, nemesis).argv(seed))
    first = runner.run_one(opts)
    cand = sh.Candidate({"protocol": protocol, "nodes": nodes, "duration": duration,
                         "seed": seed}, first.schedule)
    again = sh.run_candidate(cand)
    return first.schedule, again.body_sha256 == first.body_sha256


def test_nemesis_schedule_replays_as_scenario_events_byte_for_byte() -> None:
    """Every kind of nemesis fault, replayed as scenario events without the nemesis,
    gives the same trace (all but the sim.end event count)."""
    seen: set[str] = set()
    for seed in range(1, 40):
        faults, same = _materialised("ping", 3, 90.0, seed)
        assert same, (seed, [f.kind for f in faults])
        seen |= {f.kind for f in faults}
        if seen == set(KINDS):
            break
    assert seen == set(KINDS)


class _Lines(io.StringIO):
    def disk_events(self) -> list[tuple[str, str]]:
        recs = [json.loads(line) for line in self.getvalue().splitlines() if line]
        return [(r["target"], r["kind"]) for r in recs if r["ev"] == "sim.disk"]


def _disk_events(opts: argparse.Namespace) -> tuple[list[Any], list[tuple[str, str]]]:
    out, schedule = _Lines(), []  # type: ignore[var-annotated]
    runner.run(argparse.Namespace(**{**vars(opts), "trace": None}), out=out,
               schedule=schedule, err=io.StringIO())
    return schedule, out.disk_events()


def test_disk_faults_replay_as_scenario_events() -> None:
    """Disk faults (fsync error, torn write, corrupt record) replay as ``disk``
    scenario events: a schedule of fsync errors and torn writes gives the same trace
    byte for byte; a corrupt fault replays as the same ``sim.disk`` faults on the same
    nodes (the damaged record is drawn from the scenario's own stream)."""
    done: set[str] = set()
    for seed in range(1, 30):
        faults, same = _materialised("raft", 5, 60.0, seed, nemesis="disk")
        kinds = {f.disk for f in faults}
        if not faults:  # the seed drew no fault before the quiet tail
            continue
        assert {f.kind for f in faults} == {"disk"}
        assert kinds <= {"fsync_error", "torn_write", "corrupt"}
        if "corrupt" not in kinds:
            assert same, (seed, [sh.describe(f) for f in faults])
            done |= kinds
        elif "corrupt" not in done:
            opts = sw.resolve_argv(sw.SweepSpec("raft", 5, 60.0, "disk").argv(seed))
            _, first = _disk_events(opts)
            cand = sh.Candidate({"protocol": "raft", "nodes": 5, "duration": 60.0,
                                 "seed": seed}, faults)
            _, again = _disk_events(sh.resolved(cand))
            assert first == [(f.target, f.disk) for f in faults]
            assert again == first
            done.add("corrupt")
        if done == {"fsync_error", "torn_write", "corrupt"}:
            break
    assert done == {"fsync_error", "torn_write", "corrupt"}


def test_scenario_toml_round_trips(tmp_path: Path) -> None:
    opts = sw.resolve_argv(sw.SweepSpec("ping", 3, 90.0, "all").argv(3))
    first = runner.run_one(opts)
    cand = sh.Candidate({"protocol": "ping", "nodes": 3, "duration": 90.0, "seed": 3},
                        first.schedule)
    text = sh.scenario_toml(cand, ["a header", "second line"])
    path = tmp_path / "s.toml"
    path.write_text(text)
    sc = scenario_mod.load(str(path))
    assert sc.options == {"protocol": "ping", "nodes": 3, "duration": 90.0, "seed": 3}
    assert len(sc.events) == 2 * len(first.schedule)
    # simulate --scenario FILE runs exactly the candidate
    ns = runner.resolve_options(argparse.Namespace(scenario=str(path)))
    assert runner.run_one(ns).body_sha256 == first.body_sha256
    assert tomllib.loads(text)["simulation"]["seed"] == 3


def test_shrink_refuses_a_passing_run() -> None:
    with pytest.raises(ValueError, match="does not fail"):
        sh.Shrinker({"protocol": "raft", "nodes": 3, "duration": 6.0, "seed": 1,
                     "nemesis": "all"}).shrink()


# A failing run found by `clusterfunk sweep --protocol gossip --nodes 5 --duration 60
# --seeds 1-40 --mutant swim-never-refute` (its first failure; docs/mutants.md): four
# nemesis faults, of which a burst of datagram loss is what makes a member that never
# refutes a suspicion be declared dead.
SHRINK_CASE = ["simulate", "--protocol", "gossip", "--nodes", "5", "--duration", "60",
               "--seed", "19", "--nemesis", "all", "--mutant", "swim-never-refute"]


@pytest.mark.slow
def test_mutant_failure_shrinks_to_a_few_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = runner.run_one(sw.resolve_argv(SHRINK_CASE))
    assert first.verdict == "fail" and len(first.schedule) >= 3
    kind = sh.violation_kind(first.violations[0])
    assert kind == "false positive"
    out = tmp_path / "shrunk.toml"
    rc = main(["shrink", *SHRINK_CASE[1:], "-o", str(out), "--max-runs", "30"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"clusterfunk simulate --scenario {shlex.quote(str(out))}" in text
    sc = scenario_mod.load(str(out))
    faults = len(sc.events) // 2  # every fault is a start and an end event
    assert 1 <= faults <= 5 and faults < len(first.schedule)
    # the scenario alone (no nemesis) still fails the same way
    ns = sw.resolve_argv(["simulate", "--scenario", str(out)])
    assert not ns.nemesis and ns.mutants == {"swim-never-refute"}
    res = runner.run_one(ns)
    assert res.verdict == "fail"
    assert kind in {sh.violation_kind(v) for v in res.violations}
    # and it is the mutant: the same scenario without it passes
    ns.mutants = frozenset()
    assert runner.run_one(ns).verdict == "ok"
