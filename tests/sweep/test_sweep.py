"""``clusterfunk sweep``: parallel runs, JSON Lines, resume, replay, Dask."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from clusterfunk.cli import main
from clusterfunk.sweep import sweep as sw

# small and fast: 3 raft nodes, 8 virtual seconds, a nemesis fault or two
SMALL = ["--protocol", "raft", "--nodes", "3", "--duration", "12"]


def test_parse_seeds() -> None:
    assert sw.parse_seeds("1-4") == [1, 2, 3, 4]
    assert sw.parse_seeds("7") == [7]
    assert sw.parse_seeds("1-2,5-6,2") == [1, 2, 5, 6]
    for bad in ("", "a-b", "5-1"):
        with pytest.raises(ValueError):
            sw.parse_seeds(bad)


def test_replay_command_round_trips() -> None:
    spec = sw.SweepSpec("raft", 3, 12.5, "crash,pause", "raft-apply-before-commit")
    argv = spec.argv(9)
    cmd = sw.replay_command(argv)
    assert cmd.startswith("clusterfunk simulate ")
    assert shlex.split(cmd)[1:] == argv
    opts = sw.resolve_argv(argv)
    assert (opts.seed, opts.nodes, opts.duration, opts.nemesis) == (9, 3, 12.5, "crash,pause")
    assert opts.mutants == {"raft-apply-before-commit"}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_sweep_json_two_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.jsonl"
    rc = main(["sweep", *SMALL, "--seeds", "1-4", "--jobs", "2", "--json", "--out", str(out),
               "--progress", "never"])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 0
    per_seed, summary = lines[:-1], lines[-1]
    assert sorted(r["seed"] for r in per_seed) == [1, 2, 3, 4]
    assert all(r["verdict"] == "ok" for r in per_seed)
    assert summary["runs"] == 4 and summary["failures"] == 0
    assert summary["runs_per_s"] > 0 and summary["wall"] > 0
    stored = sw.read_results(str(out))
    assert sorted(r["seed"] for r in stored) == [1, 2, 3, 4]
    for r in stored:
        assert r["options"] == {"protocol": "raft", "nodes": 3, "duration": 12.0,
                                "nemesis": "all", "mutant": None}
        assert len(r["trace_sha256"]) == 64 and r["wall"] > 0
    # the same seeds in one process give the same traces
    again = {r["seed"]: r["trace_sha256"] for r in
             sw.sweep(sw.SweepSpec("raft", 3, 12.0), [1, 2, 3, 4], jobs=1).results}
    assert again == {r["seed"]: r["trace_sha256"] for r in stored}


def test_resume_skips_done_seeds(tmp_path: Path) -> None:
    out = str(tmp_path / "r.jsonl")
    spec = sw.SweepSpec("raft", 3, 6.0)
    first = sw.sweep(spec, [1, 2], out=out)
    assert first.runs == 2
    second = sw.sweep(spec, [1, 2, 3], out=out, resume=True)
    assert (second.runs, second.resumed) == (1, 2)
    assert sorted(r["seed"] for r in sw.read_results(out)) == [1, 2, 3]
    # other options are not "done": a different duration runs everything
    third = sw.sweep(sw.SweepSpec("raft", 3, 7.0), [1, 2], out=out, resume=True)
    assert third.runs == 2


def test_failures_exit_1_and_replay_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # applying uncommitted entries is seen at once by the safety checker
    rc = main(["sweep", *SMALL, "--seeds", "1-2", "--json", "--progress", "never",
               "--mutant", "raft-apply-before-commit"])
    captured = capsys.readouterr()
    lines = _json_lines(captured.out)
    assert rc == 1
    assert lines[-1]["failures"] == 2
    fail = next(r for r in lines[:-1] if r["verdict"] == "fail")
    assert fail["violations"]
    # the failure table lists the exact replay command
    assert fail["replay"] in captured.err
    trace = tmp_path / "t.jsonl"
    argv = shlex.split(fail["replay"])[1:]
    assert main([*argv, "--trace", str(trace)]) == 1
    capsys.readouterr()
    assert hashlib.sha256(trace.read_bytes()).hexdigest() == fail["trace_sha256"]


def test_dask_local_cluster_matches_local_processes() -> None:
    distributed = pytest.importorskip("distributed")
    spec = sw.SweepSpec("raft", 3, 6.0)
    local = {r["seed"]: r["trace_sha256"] for r in sw.sweep(spec, [1, 2, 3], jobs=1).results}
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        res = sw.sweep(spec, [1, 2, 3], dask=cluster.scheduler_address)
    assert {r["seed"]: r["trace_sha256"] for r in res.results} == local
    assert res.runs == 3 and not res.failures
