"""Planted bugs: the registry, the switches, and that the checkers catch them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from clusterfunk import mutants
from clusterfunk.cli import build_parser, main
from clusterfunk.cluster.coordinator import CoordinatorConfig
from clusterfunk.gossip.config import GossipConfig
from clusterfunk.raft.config import RaftConfig
from clusterfunk.sim import runner
from clusterfunk.sim import scenario as scenario_mod
from clusterfunk.sweep.sweep import resolve_argv, run_seed


def test_registry_is_pure_and_complete() -> None:
    # importing the registry pulls in no simulator or protocol module
    code = (
        "import sys, clusterfunk.mutants as m; "
        "bad = [k for k in sys.modules if k.startswith(('clusterfunk.sim', 'clusterfunk.raft', "
        "'clusterfunk.gossip', 'clusterfunk.cluster', 'trio'))]; "
        "print(len(m.MUTANTS)); assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = mutants.names()
    for wanted in (
        "raft-commit-old-term", "raft-vote-without-log-check", "raft-vote-not-persisted",
        "raft-stale-append", "raft-apply-before-commit", "swim-never-refute",
        "gossip-dead-without-suspicion", "shard-commit-before-acks",
    ):
        assert wanted in names
    for m in mutants.MUTANTS.values():
        assert m.rule and m.section and m.core in ("raft", "gossip", "coordinator")


def test_off_by_default() -> None:
    assert RaftConfig().mutants == frozenset()
    assert GossipConfig().mutants == frozenset()
    assert CoordinatorConfig().mutants == frozenset()
    assert resolve_argv(["simulate", "--protocol", "raft"]).mutants == frozenset()


def test_list_mutants(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list-mutants"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == mutants.names()


def test_parse_validates_name_and_protocol() -> None:
    assert mutants.parse("raft-stale-append", "cluster") == {"raft-stale-append"}
    with pytest.raises(mutants.UnknownMutant):
        mutants.parse("no-such-bug")
    with pytest.raises(mutants.UnknownMutant):
        mutants.parse("swim-never-refute", "raft")  # raft runs no gossip core
    with pytest.raises(mutants.UnknownMutant):
        mutants.parse("shard-commit-before-acks", "gossip")


def test_simulate_rejects_a_bad_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["simulate", "--protocol", "raft", "--duration", "1", "--mutant", "nope"])
    assert rc == 2
    assert "unknown mutant" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["raft-node", "--id", "n1", "--bind", "127.0.0.1:1", "--peers", "n1=127.0.0.1:1",
         "--data-dir", "/tmp/x"],
        ["gossip-node", "--name", "n1"],
        ["cluster-node", "--id", "n1"],
    ],
)
def test_real_process_commands_reject_mutant(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    cmd = sub.choices[argv[0]]  # type: ignore[index]
    assert not any(s.startswith("--mut") for s in cmd._option_string_actions)
    parser.parse_args(argv)  # the command line is valid without the option
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*argv, "--mutant", "raft-stale-append"])
    assert exc.value.code == 2
    assert "--mutant" in capsys.readouterr().err


def _run(protocol: str, nodes: int, duration: float, seed: int, mutant: str | None,
         extra: tuple[str, ...]) -> dict:
    argv = ["simulate", "--protocol", protocol, "--nodes", str(nodes), "--duration",
            str(duration), "--seed", str(seed), *extra]
    if mutant:
        argv += ["--mutant", mutant]
    return run_seed(argv)


#: the harsher simulation of docs/mutants.md: overlapping faults aimed at the leader
#: half of the time, slow nodes and crash-restarts, clients behind a load balancer
#: with a short timeout, AppendEntries of at most 2 entries
HARSH = ("--nemesis", "harsh", "--nemesis-overlap", "3", "--nemesis-gap", "2",
         "--nemesis-focus", "0.5", "--client-routing", "any", "--clients", "6",
         "--op-timeout", "0.5", "--max-entries-per-msg", "2")

# (protocol, nodes, duration, seed, options, mutant, violation text): small runs found by
# `clusterfunk sweep` (docs/mutants.md); the same run without the mutant is clean.
CAUGHT = [
    ("raft", 3, 10, 1, ("--nemesis", "all"), "raft-apply-before-commit",
     "Apply Committed Only"),
    ("raft", 3, 10, 1, ("--nemesis", "all"), "raft-commit-minority", "Commit Majority"),
    ("raft", 3, 30, 9, ("--nemesis", "partition,crash"), "raft-append-keeps-conflicts",
     "State Machine Safety"),
    ("gossip", 5, 60, 19, ("--nemesis", "all"), "swim-never-refute", "false positive"),
    ("gossip", 5, 60, 19, ("--nemesis", "all"), "gossip-dead-without-suspicion",
     "false positive"),
    ("cluster", 5, 60, 2, ("--nemesis", "all"), "shard-commit-before-acks",
     "committed before"),
    # found only by the harsher simulation (first failing seed of its sweep)
    ("raft", 5, 60, 5, HARSH, "raft-commit-old-term", "Leader Commit Rule"),
    ("raft", 5, 60, 9, HARSH, "raft-vote-without-log-check", "Leader Completeness"),
    ("raft", 5, 60, 15, HARSH, "raft-read-without-quorum", "linearizability"),
    # the harsh mix plus stalled send paths (seed 32 of its sweep, cut at 10 s with the
    # 60 s run's fault schedule)
    ("raft", 5, 10, 32, ("--nemesis", "harsh,stall", *HARSH[2:], "--nemesis-until", "45"),
     "raft-stale-append", "Committed Entry Kept"),
    # slow links, crash-restarts and a crash just after a vote, Pre-Vote off (seed 3
    # of its 3-node sweep, cut at 12 s with the 60 s run's fault schedule)
    ("raft", 3, 12, 3, ("--nemesis", "slow,bounce,vote-crash", *HARSH[2:], "--pre-vote", "off",
                        "--nemesis-until", "45"), "raft-vote-not-persisted", "Election Safety"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "nodes", "duration", "seed", "extra", "mutant", "text"), CAUGHT
)
def test_checkers_catch_the_mutant(
    protocol: str, nodes: int, duration: float, seed: int, extra: tuple[str, ...],
    mutant: str, text: str,
) -> None:
    bad = _run(protocol, nodes, duration, seed, mutant, extra)
    assert bad["verdict"] == "fail"
    assert any(text in v for v in bad["violations"]), bad["violations"]
    good = _run(protocol, nodes, duration, seed, None, extra)
    assert good["verdict"] == "ok", good["violations"]


SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
# (scenario written by `clusterfunk shrink`, or by hand for mutant-vote-not-persisted.toml;
# the violation its mutant gives)
SHRUNK = [
    ("mutant-append-keeps-conflicts.toml", "State Machine Safety"),
    ("mutant-commit-old-term.toml", "Leader Commit Rule"),
    ("mutant-read-without-quorum.toml", "linearizability"),
    ("mutant-stale-append.toml", "Committed Entry Kept"),
    ("mutant-vote-not-persisted.toml", "Election Safety"),
    ("mutant-vote-not-persisted-shrunk.toml", "Election Safety"),
    pytest.param("mutant-vote-without-log-check.toml", "Leader Completeness",
                 marks=pytest.mark.slow),
]


def _scenario(name: str, mutant: bool) -> runner.Outcome:
    sc = scenario_mod.load(str(SIMULATIONS / name))
    options = dict(sc.options)
    if not mutant:
        options.pop("mutant")
    opts = runner.resolve_options(argparse.Namespace(**options))
    opts.scenario_events = sc.events
    return runner.run_one(opts)


@pytest.mark.parametrize(("name", "text"), SHRUNK)
def test_shrunk_scenario_fails_only_with_its_mutant(name: str, text: str) -> None:
    """A mutant's scenario is a scripted story of its bug: the mutant fails it with the
    same kind of violation, the correct code passes the very same faults."""
    bad = _scenario(name, mutant=True)
    assert bad.verdict == "fail"
    assert any(text in v for v in bad.violations), bad.violations
    good = _scenario(name, mutant=False)
    assert good.verdict == "ok", good.violations
