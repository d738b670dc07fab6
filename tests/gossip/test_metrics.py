"""Trace analysis for gossip runs, on hand-written traces."""

from __future__ import annotations

from clusterfunk.runtime.driver import DriverStats
from clusterfunk.sim.checkers import gossip as metrics


def start(*nodes: str) -> dict:
    return {"t": 0.0, "node": "sim", "ev": "sim.start", "seed": 1, "nodes": list(nodes)}


def sim(t: float, ev: str, **f: object) -> dict:
    return {"t": t, "node": "sim", "ev": f"sim.{ev}", **f}


def member(t: float, node: str, m: str, status: str, inc: int = 0) -> dict:
    return {"t": t, "node": node, "ev": "gossip.member", "member": m, "status": status,
            "incarnation": inc}


def alive_all(t: float, nodes: list[str]) -> list[dict]:
    return [member(t, s, x, "alive") for s in nodes for x in nodes]


def test_detection_delays_per_survivor() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    recs = [start(*nodes), *alive_all(0.5, nodes), sim(10.0, "crash", target="n4"),
            member(12.0, "n1", "n4", "suspect"), member(15.5, "n1", "n4", "dead"),
            member(16.0, "n2", "n4", "dead"), member(17.25, "n3", "n4", "dead"),
            member(18.0, "n3", "n4", "dead")]
    [c] = metrics.detection(recs)
    assert c.target == "n4" and c.t == 10.0
    assert c.delays == {"n1": 5.5, "n2": 6.0, "n3": 7.25}
    assert c.all_dead_after == 7.25
    s = metrics.detection_summary([c])
    assert s["detection_median_s"] == 6.0 and s["detection_max_s"] == 7.25
    assert s["undecided"] == 0


def test_undecided_and_survivor_crashes() -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    recs = [start(*nodes), *alive_all(0.5, nodes), sim(10.0, "crash", target="n4"),
            member(11.0, "n1", "n4", "dead"),
            sim(12.0, "crash", target="n3"),  # n3 crashes before deciding: not a survivor
            member(20.0, "n1", "n3", "dead")]
    first, second = metrics.detection(recs)
    assert first.delays == {"n1": 1.0, "n2": None}
    assert not first.complete and first.all_dead_after is None
    assert second.target == "n3" and second.delays == {"n1": 8.0, "n2": None}
    assert metrics.detection_summary([first, second])["undecided"] == 2


def test_restart_before_detection_is_flagged() -> None:
    recs = [start("n1", "n2"), sim(5.0, "crash", target="n2"), sim(6.0, "restart", target="n2")]
    [c] = metrics.detection(recs)
    assert c.restarted and c.delays == {"n1": None}


def test_false_positives_ignore_fault_windows() -> None:
    nodes = ["n1", "n2", "n3"]
    recs = [start(*nodes), *alive_all(0.1, nodes),
            member(5.0, "n1", "n2", "dead"),           # false positive: n2 is up
            member(6.0, "n1", "n2", "left"),           # a leave is not a failure verdict
            sim(10.0, "crash", target="n3"), member(14.0, "n1", "n3", "dead"),
            sim(20.0, "restart", target="n3"), member(22.0, "n2", "n3", "dead"),  # in grace
            member(40.0, "n2", "n3", "dead"),          # after grace: false positive
            sim(50.0, "pause", target="n1"), member(55.0, "n2", "n1", "dead"),
            sim(56.0, "resume", target="n1"),
            sim(70.0, "partition", groups=[["n1"], ["n2", "n3"]]),
            member(75.0, "n1", "n2", "dead"), sim(80.0, "heal"),
            member(85.0, "n3", "n1", "dead"),          # in grace after heal
            member(95.0, "n3", "n1", "dead")]          # after grace
    fps = metrics.false_positives(recs, grace=10.0)
    assert [(r["t"], r["node"], r["member"]) for r in fps] == [
        (5.0, "n1", "n2"), (40.0, "n2", "n3"), (95.0, "n3", "n1")]


def test_convergence_after_heal() -> None:
    nodes = ["n1", "n2", "n3"]
    recs = [start(*nodes), *alive_all(0.1, nodes),
            sim(10.0, "partition", groups=[["n1"], ["n2", "n3"]]),
            member(15.0, "n1", "n2", "dead"), member(15.0, "n1", "n3", "dead"),
            member(16.0, "n2", "n1", "dead"), member(16.0, "n3", "n1", "dead"),
            sim(30.0, "heal"),
            member(31.0, "n1", "n2", "alive"), member(33.0, "n2", "n1", "alive"),
            member(34.0, "n3", "n1", "suspect"), member(36.0, "n3", "n1", "alive"),
            member(40.0, "n1", "n3", "alive")]
    assert metrics.convergence_after_heals(recs) == [10.0]
    # A heal whose views never converge, and one interrupted by a new partition.
    cut = recs[:-1]
    assert metrics.convergence_after_heals(cut) == [None]
    again = [*cut, sim(50.0, "partition", groups=[["n1"]]), sim(60.0, "heal"),
             member(61.0, "n1", "n3", "alive")]
    assert metrics.convergence_after_heals(again) == [None, 1.0]


def test_convergence_ignores_crashed_members() -> None:
    nodes = ["n1", "n2", "n3"]
    recs = [start(*nodes), *alive_all(0.1, nodes),
            sim(5.0, "partition", groups=[["n1"], ["n2", "n3"]]),
            member(9.0, "n1", "n2", "dead"), sim(10.0, "crash", target="n3"), sim(12.0, "heal"),
            member(14.0, "n1", "n2", "alive")]
    assert metrics.convergence_after_heals(recs) == [2.0]


def test_load_per_member_per_second() -> None:
    a = DriverStats(datagrams_out=100, frames_out=20, bytes_out=12_000)
    b = DriverStats(datagrams_out=80, frames_out=0, bytes_out=8_000)
    out = metrics.load([a, b], members=2, duration=10.0)
    assert out == {"packets_per_member_s": 10.0, "bytes_per_member_s": 1000.0}
    assert metrics.load([a], members=0, duration=1.0)["packets_per_member_s"] is None
