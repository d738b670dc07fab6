"""Gossip in the simulator: the workload end to end, detection, convergence, tags,
events and a key rotation across a running, keyed cluster."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from clusterfunk.gossip.config import LAN
from clusterfunk.gossip.events import MEMBER_EVENTS, UserEvent
from clusterfunk.gossip.keyring import INSTALL, REMOVE, USE
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.gossip import PORT, SIM_KEY, GossipWorkload, detection_bound


def workload(nodes: int, **kw: object) -> GossipWorkload:
    ns = argparse.Namespace(nodes=nodes, duration=kw.pop("duration", 60.0), **kw)
    return GossipWorkload(ns)


def run(seed: int, nodes: int, until: float, *, loss: float = 0.0, faults=(), **kw: object):
    sim = Simulation(seed, link=LinkConfig(loss=loss))
    wl = workload(nodes, duration=until, **kw)
    wl.setup(sim)
    for t, fn, *args in faults:
        sim.at(t, getattr(sim, fn), *args)
    sim.run_until(until)
    return sim, wl, wl.finish(sim)


def views(sim: Simulation) -> dict[str, dict[str, str]]:
    out = {}
    for name in sim.names:
        app = sim.app(name)
        if app is not None:
            out[name] = {m.name: m.status for m in app.core.members()}
    return out


def test_bound_formula() -> None:
    # 5 members, LAN: 6 probe periods + 24 s max suspicion + 2 s spread + 2 s slack.
    assert detection_bound(LAN, 5) == 6 + 24 + 2 + 2


def test_crash_is_detected_by_every_survivor() -> None:
    sim, wl, s = run(2, 5, 90.0, faults=[(30.0, "crash", "n4")])
    assert s["violations"] == []
    assert s["crashes"] == 1 and s["undecided"] == 0
    assert 0 < s["detection_max_s"] <= wl.bound
    for name, v in views(sim).items():
        assert v["n4"] == "dead", name
        assert all(st == "alive" for m, st in v.items() if m != "n4")
    assert s["packets_per_member_s"] > 0 and s["false_positives"] == 0


def test_missed_detection_is_a_violation() -> None:
    # A bound no protocol can meet turns the detection into a reported violation.
    _, _, s = run(2, 5, 90.0, faults=[(30.0, "crash", "n4")], detect_bound=0.5)
    assert s["violations"] and all("crashed" in v for v in s["violations"])


def test_a_live_member_declared_dead_is_a_false_positive() -> None:
    # Silently losing every datagram to and from n3 (not a partition the simulator
    # announces) makes the others declare a live member dead: reported as violations.
    sim = Simulation(8)
    wl = workload(4)
    wl.setup(sim)
    sim.run_until(20.0)
    for other in ("n1", "n2", "n4"):
        sim.set_link("n3", other, LinkConfig(loss=1.0))
        sim.set_link(other, "n3", LinkConfig(loss=1.0))
    sim.run_until(80.0)
    s = wl.finish(sim)
    assert s["false_positives"] >= 3
    assert any("false positive" in v and "n3" in v for v in s["violations"])


def test_views_converge_after_a_partition_heals() -> None:
    faults = [(20.0, "partition", [["n1", "n2"], ["n3", "n4", "n5"]]), (80.0, "heal")]
    sim, _, s = run(3, 5, 200.0, faults=faults)
    [conv] = s["convergence_after_heal_s"]
    assert conv is not None and conv < 60.0
    assert s["violations"] == []
    for v in views(sim).values():
        assert set(v.values()) == {"alive"} and len(v) == 5


def test_tags_and_events_reach_every_member() -> None:
    sim = Simulation(4)
    wl = workload(6)
    wl.setup(sim)
    sim.run_until(10.0)
    sim.app("n2").call(lambda core, now: core.set_tags(now, {"role": "db", "zone": "b"}))
    sim.app("n5").call(lambda core, now: core.user_event(now, "deploy", b"v2", coalesce=False))
    sim.run_until(20.0)
    for name in sim.names:
        core = sim.app(name).core
        assert core.member("n2").tags == {"role": "db", "zone": "b"}, name
        got = [e for e in sim.app(name).events if type(e) is UserEvent]
        assert [(e.name, e.payload) for e in got] == [("deploy", b"v2")], name
        # Membership events are in the trace (gossip.member), not kept by the node
        # (a mass join would keep n^2 of them alive).
        assert not [e for e in sim.app(name).events if type(e) in MEMBER_EVENTS], name
    assert sim.tracer.counts["gossip.member"] >= 36


def test_key_rotation_keeps_membership() -> None:
    """install -> use -> remove across 5 sealed members; nobody is declared dead."""
    new = bytes(range(100, 132))
    sim = Simulation(5)
    wl = workload(5, gossip_keyring=True)
    wl.setup(sim)
    sim.run_until(10.0)
    n1 = sim.app("n1")
    results = {}
    for op in (INSTALL, USE, REMOVE):
        # A query travels by gossip and may miss a member (about 1 step in 100 here);
        # the operations are idempotent, so an incomplete step is asked again.
        for _ in range(3):
            qid = n1.key_op(op, new if op != REMOVE else SIM_KEY)
            sim.run_for(10.0)
            assert n1.query_done(qid) is not None
            results[op] = n1.key_result(op, qid)
            if results[op].complete:
                break
    for op, res in results.items():
        assert res.complete, (op, res)
        assert res.ok == ("n1", "n2", "n3", "n4", "n5")
    for name in sim.names:
        assert sim.app(name).codec.keyring.keys == [new], name
    sim.run_until(80.0)
    s = wl.finish(sim)
    assert s["violations"] == [] and s["false_positives"] == 0
    for v in views(sim).values():
        assert set(v.values()) == {"alive"} and len(v) == 5
    # Traffic after the rotation is sealed with the new key and opens everywhere;
    # sealed datagrams still fit the budget.
    assert s["keyring_auth_failed"] == 0 and s["oversize"] == 0 and s["malformed"] == 0
    assert all(c.stats.opened > 0 for c in wl.codecs)


def test_removing_a_primary_key_is_refused_everywhere() -> None:
    sim = Simulation(6)
    wl = workload(3, gossip_keyring=True)
    wl.setup(sim)
    sim.run_until(10.0)
    n1 = sim.app("n1")
    qid = n1.key_op(REMOVE, SIM_KEY)
    sim.run_until(20.0)
    res = n1.key_result(REMOVE, qid)
    assert not res.complete and sorted(res.errors) == ["n1", "n2", "n3"]
    assert all("primary" in e for e in res.errors.values())


def test_a_node_with_a_foreign_key_cannot_join() -> None:
    sim = Simulation(7)
    wl = workload(4, gossip_keyring=True)
    wl.setup(sim)
    from clusterfunk.sim.workloads.gossip import build_node

    sim.add_node("x1", lambda host: build_node(host, LAN, [f"n1:{PORT}"], keyring_keys=[bytes(16)]))
    sim.run_until(30.0)
    assert sim.app("x1").core.num_members() == 1
    assert all(sim.app(n).core.member("x1") is None for n in ("n1", "n2", "n3", "n4"))
    assert sum(c.stats.auth_failed for c in wl.codecs) > 0


def test_simulate_cli_is_deterministic_across_processes(tmp_path) -> None:
    """Same seed, fresh processes, different PYTHONHASHSEED: byte-identical traces."""
    traces = []
    for hashseed in ("1", "2"):
        path = tmp_path / f"t{hashseed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run(
            [sys.executable, "-m", "clusterfunk", "simulate", "--protocol", "gossip",
             "--nodes", "6", "--duration", "120", "--seed", "9", "--loss", "0.02",
             "--crash", "n6@40", "--nemesis", "partition,pause,skew",
             "--gossip-keyring", "--trace", str(path), "--json"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )
        assert proc.returncode in (0, 1), proc.stderr
        summary = json.loads(proc.stdout)
        assert "detection_median_s" in summary["workload"]
        traces.append(path.read_bytes())
    assert traces[0] == traces[1]
    assert b'"ev":"gossip.member"' in traces[0]
