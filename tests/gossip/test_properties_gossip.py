"""Hypothesis properties of gossip in the simulator (few examples, short runs).

* every crashed member is declared dead by every survivor within the bound;
* no false positive at 1 % loss;
* views converge after a partition heals;
* tags and user events reach every live member.
"""

from __future__ import annotations

import argparse
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterfunk.gossip.events import UserEvent
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.gossip import GossipWorkload

#: ``GOSSIP_EXAMPLES=200`` for a deeper (random) search than CI's fixed 8 examples.
_DEEP = int(os.environ.get("GOSSIP_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_DEEP or 8, deadline=None, derandomize=not _DEEP,
                    suppress_health_check=[HealthCheck.too_slow])
#: After a heal, members declared dead on the other side come back through
#: reconnect attempts (every reconnect_interval = 30 s, jittered up to 2x) and
#: gossip to the dead; the bound leaves room for two rounds plus dissemination.
CONVERGE_BOUND = 90.0


def build(seed: int, nodes: int, loss: float = 0.0):
    sim = Simulation(seed, link=LinkConfig(loss=loss))
    wl = GossipWorkload(argparse.Namespace(nodes=nodes, duration=0.0))
    wl.setup(sim)
    return sim, wl


@SETTINGS
@given(seed=st.integers(0, 2**32), nodes=st.integers(3, 8), victim=st.integers(1, 8),
       at=st.floats(10.0, 40.0), loss=st.sampled_from([0.0, 0.01]))
def test_every_crash_is_detected_by_every_survivor(seed, nodes, victim, at, loss) -> None:
    victim = f"n{(victim - 1) % nodes + 1}"
    sim, wl = build(seed, nodes, loss)
    sim.at(at, sim.crash, victim)
    sim.run_until(at + wl.bound + 1.0)
    s = wl.finish(sim)
    assert s["violations"] == []
    assert s["crashes"] == 1 and s["undecided"] == 0
    assert s["detection_max_s"] <= wl.bound
    for name in sim.names:
        if name != victim:
            assert sim.app(name).core.member(victim).status == "dead", name


@SETTINGS
@given(seed=st.integers(0, 2**32), nodes=st.integers(3, 10))
def test_no_false_positive_at_one_percent_loss(seed, nodes) -> None:
    sim, wl = build(seed, nodes, loss=0.01)
    sim.run_until(300.0)
    s = wl.finish(sim)
    assert s["false_positives"] == 0, s["violations"]
    assert s["violations"] == []
    for name in sim.names:
        assert {m.status for m in sim.app(name).core.members()} == {"alive"}, name


@SETTINGS
@given(seed=st.integers(0, 2**32), nodes=st.integers(4, 8), data=st.data(),
       cut=st.floats(2.0, 60.0))
def test_views_converge_after_heal(seed, nodes, data, cut) -> None:
    names = [f"n{i}" for i in range(1, nodes + 1)]
    side = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=nodes - 1,
                              unique=True))
    sim, wl = build(seed, nodes)
    sim.at(10.0, sim.partition, [sorted(side)])
    sim.at(10.0 + cut, sim.heal)
    sim.run_until(10.0 + cut + CONVERGE_BOUND)
    s = wl.finish(sim)
    [conv] = s["convergence_after_heal_s"]
    assert conv is not None and conv <= CONVERGE_BOUND
    assert s["violations"] == []
    for name in names:
        statuses = {m.name: m.status for m in sim.app(name).core.members()}
        assert statuses == dict.fromkeys(names, "alive"), name


@SETTINGS
@given(seed=st.integers(0, 2**32), nodes=st.integers(2, 10), data=st.data(),
       loss=st.sampled_from([0.0, 0.01, 0.05]))
def test_tags_and_events_reach_every_live_member(seed, nodes, data, loss) -> None:
    names = [f"n{i}" for i in range(1, nodes + 1)]
    tagger = data.draw(st.sampled_from(names))
    sender = data.draw(st.sampled_from(names))
    tags = data.draw(st.dictionaries(st.text("abcxyz", min_size=1, max_size=5),
                                     st.text(max_size=10), max_size=4))
    sim, _ = build(seed, nodes, loss)
    sim.run_until(10.0)
    sim.app(tagger).call(lambda core, now: core.set_tags(now, tags))
    sim.app(sender).call(lambda core, now: core.user_event(now, "hello", b"x", coalesce=False))
    # Piggybacked gossip delivers within a second or so; push-pull (30 s) repairs
    # anything that loss made a member miss.
    sim.run_until(80.0)
    for name in names:
        app = sim.app(name)
        assert app.core.member(tagger).tags == tags, name
        got = [(e.name, e.payload) for e in app.events if type(e) is UserEvent]
        assert got == [("hello", b"x")], name


@SETTINGS
@given(seed=st.integers(0, 2**32), nodes=st.integers(2, 8),
       loss=st.sampled_from([0.0, 0.01]), start=st.floats(5.0, 30.0))
def test_key_rotation_keeps_every_member(seed, nodes, loss, start) -> None:
    """install -> use -> remove, each step retried until every member applied it:
    afterwards every keyring holds only the new key and nobody was declared dead."""
    from clusterfunk.gossip.keyring import INSTALL, REMOVE, USE
    from clusterfunk.sim.workloads.gossip import SIM_KEY

    new = bytes(range(7, 39))
    sim = Simulation(seed, link=LinkConfig(loss=loss))
    wl = GossipWorkload(argparse.Namespace(nodes=nodes, duration=0.0, gossip_keyring=True))
    wl.setup(sim)
    sim.run_until(start)
    origin = sim.app(f"n{seed % nodes + 1}")
    for op, key in ((INSTALL, new), (USE, new), (REMOVE, SIM_KEY)):
        for _ in range(5):
            qid = origin.key_op(op, key)
            sim.run_for(5.0)
            result = origin.key_result(op, qid)
            if result.complete:
                break
        assert result.complete, (op, result)
    sim.run_for(30.0)
    s = wl.finish(sim)
    assert s["violations"] == [] and s["false_positives"] == 0
    for name in sim.names:
        app = sim.app(name)
        assert app.codec.keyring.keys == [new], name
        assert {m.status for m in app.core.members()} == {"alive"}, name
