"""``simulate --stop-at-violation``: a failing run ends at the first violation an
in-run checker reports (a mutant's diverged cluster can otherwise run slowly for
minutes), and a run with no violation is exactly the run without the flag."""

from __future__ import annotations

from clusterfunk.sweep.sweep import run_seed

BASE = ["simulate", "--protocol", "raft", "--nodes", "5", "--duration", "20",
        "--nemesis", "all"]


def test_a_mutant_run_stops_at_its_first_violation() -> None:
    argv = [*BASE, "--seed", "1", "--mutant", "raft-apply-before-commit"]
    full = run_seed(argv)
    stopped = run_seed([*argv, "--stop-at-violation"])
    assert full["verdict"] == stopped["verdict"] == "fail"
    assert 0 < stopped["violation_count"] < full["violation_count"]
    # the violations found so far are the full run's first ones
    assert set(stopped["violations"]) <= set(full["violations"])
    assert stopped["trace_sha256"] != full["trace_sha256"]  # a shorter run


def test_without_a_violation_the_flag_changes_nothing() -> None:
    argv = [*BASE, "--seed", "2"]
    plain = run_seed(argv)
    flagged = run_seed([*argv, "--stop-at-violation"])
    assert plain["verdict"] == flagged["verdict"] == "ok"
    assert plain["trace_sha256"] == flagged["trace_sha256"]
