"""The opt-in harsher nemesis: ``slow`` and ``bounce`` faults, overlapping faults
(``--nemesis-overlap``), a shorter gap (``--nemesis-gap``) and faults aimed at the
Raft leader (``--nemesis-focus``); their schedules replay through shrink."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from clusterfunk.sim import runner
from clusterfunk.sim.nemesis import BOUNCE_DOWN, HARSH, KINDS, SLOW_LATENCY, Fault, parse_kinds
from clusterfunk.sweep import shrink as sh
from clusterfunk.sweep import sweep as sw

LINK_KINDS = ("loss", "duplicate", "reorder")


def _opts(protocol: str, nodes: int, duration: float, seed: int, *extra: str) -> argparse.Namespace:
    return sw.resolve_argv(
        sw.SweepSpec(protocol, nodes, duration, "harsh", extra=tuple(extra)).argv(seed))


def _run(opts: argparse.Namespace) -> tuple[list[Fault], list[dict[str, Any]]]:
    out, schedule = io.StringIO(), []  # type: ignore[var-annotated]
    runner.run(argparse.Namespace(**{**vars(opts), "trace": None}), out=out,
               schedule=schedule, err=io.StringIO())
    return schedule, [json.loads(line) for line in out.getvalue().splitlines() if line]


def test_harsh_is_all_plus_slow_and_bounce() -> None:
    assert parse_kinds("all") == KINDS  # `--nemesis all` runs keep their faults
    assert parse_kinds("harsh") == HARSH == (*KINDS, "slow", "bounce")
    assert "slow" not in KINDS and "bounce" not in KINDS


def test_overlapping_faults_never_share_what_they_change() -> None:
    """Up to N faults at once, but never two partitions, two default-link changes or
    two faults on one node (a slow path and a fault of the node's process may); and
    they do overlap."""
    overlapped = 0
    for seed in (1, 2):
        faults, _ = _run(_opts("ping", 5, 120, seed, "--nemesis-overlap", "4",
                               "--nemesis-gap", "1"))
        for i, a in enumerate(faults):
            live = [b for b in faults[:i] if b.until > a.at]
            assert len(live) <= 3
            overlapped += bool(live)
            for b in live:
                assert not (a.kind == b.kind == "partition")
                assert not (a.kind in LINK_KINDS and b.kind in LINK_KINDS)
                same = a.target and a.target == b.target
                # a slow network path may overlap a fault of its node's process
                assert not (same and (a.kind == b.kind or "slow" not in (a.kind, b.kind))), (a, b)
    assert overlapped > 5


def test_slow_and_bounce_faults() -> None:
    """``slow`` gives every link of its target the drawn latency (traced as sim.link with
    the target) and gives them back; ``bounce`` is a crash shorter than 1 s."""
    faults, trace = _run(_opts("ping", 5, 200, 3, "--nemesis-overlap", "3",
                               "--nemesis-gap", "2"))
    slow = [f for f in faults if f.kind == "slow"]
    bounce = [f for f in faults if f.kind == "bounce"]
    assert slow and bounce
    for f in slow:
        lo, hi = SLOW_LATENCY
        assert lo <= f.link["latency"] <= hi and f.link["jitter"] == f.link["latency"] / 2
        recs = [r for r in trace if r["ev"] == "sim.link" and r.get("target") == f.target
                and round(f.at, 6) <= r["t"] <= round(f.until, 6)]
        assert [r["latency"] for r in recs] == [f.link["latency"], 0.001], recs
    for f in bounce:
        assert BOUNCE_DOWN[0] <= f.until - f.at <= BOUNCE_DOWN[1]
        evs = [(r["ev"], r["t"]) for r in trace
               if r.get("target") == f.target and round(f.at, 6) <= r["t"] <= round(f.until, 6)]
        assert ("sim.crash", round(f.at, 6)) in evs
        assert ("sim.restart", round(f.until, 6)) in evs


@pytest.mark.slow
def test_harsh_overlapping_schedule_replays_byte_for_byte() -> None:
    """The schedule of a harsh, overlapping nemesis run, replayed as scenario events
    (what ``clusterfunk shrink`` does), gives the same trace but sim.end."""
    seen: set[str] = set()
    for seed in (1, 2, 3):
        opts = _opts("raft", 3, 40, seed, "--nemesis-overlap", "3", "--nemesis-gap", "2",
                     "--client-routing", "any")
        first = runner.run_one(opts)
        cand = sh.Candidate({"protocol": "raft", "nodes": 3, "duration": 40, "seed": seed,
                             "client_routing": "any"}, first.schedule)
        again = sh.run_candidate(cand)
        assert again.body_sha256 == first.body_sha256, [f.kind for f in first.schedule]
        seen |= {f.kind for f in first.schedule}
    assert {"slow", "bounce"} <= seen


def test_focus_hits_the_leader() -> None:
    """With ``--nemesis-focus 1`` a fault on one node hits the Raft leader of the moment."""
    opts = sw.resolve_argv([*sw.SweepSpec("raft", 5, 30, "crash").argv(4),
                            "--nemesis-focus", "1"])
    faults, trace = _run(opts)
    assert faults
    leader = ""
    crashes = 0
    for r in trace:
        if r["ev"] == "raft.role" and r["role"] == "leader":
            leader = r["node"]
        elif r["ev"] == "sim.crash":
            assert r["target"] == leader
            crashes += 1
    assert crashes == len(faults)


def test_bad_harsh_options_are_refused() -> None:
    for extra in (["--nemesis-overlap", "0"], ["--nemesis-focus", "1.5"]):
        with pytest.raises(runner.UsageError):
            sw.resolve_argv(sw.SweepSpec("raft", 3, 10, "harsh").argv(1) + extra)
