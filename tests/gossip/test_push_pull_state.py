"""The push-pull state: each member's entry is reused while it is current, rebuilt as
soon as the member changes; a hostile tag map is refused with the field named."""

from __future__ import annotations

import argparse

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk import wire
from clusterfunk.gossip.messages import MemberState, PushPull
from clusterfunk.gossip.state import MemberRecord, MemberTable
from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.gossip import GossipWorkload


def test_a_members_entry_is_reused_until_it_changes() -> None:
    rec = MemberRecord("n2", "n2:7946", 3, "alive", {"role": "db"}, 0.0)
    first = rec.wire_state()
    assert first == MemberState("n2", "n2:7946", 3, "alive", {"role": "db"})
    assert rec.wire_state() is first
    rec.since = 5.0  # not part of the entry
    assert rec.wire_state() is first
    for change in (
        lambda r: setattr(r, "incarnation", 4),
        lambda r: setattr(r, "status", "suspect"),
        lambda r: setattr(r, "addr", "n2:7947"),
        lambda r: setattr(r, "tags", {"role": "web"}),
    ):
        before = rec.wire_state()
        change(rec)
        after = rec.wire_state()
        assert after is not before
        assert after == MemberState(rec.name, rec.addr, rec.incarnation, rec.status, rec.tags)
    assert rec == MemberRecord("n2", "n2:7947", 4, "suspect", {"role": "web"}, 5.0)


_TAG = next(t for t, cls in wire.registered_tags().items() if cls is PushPull)


def _push_pull(tags: object) -> bytes:
    return msgpack.packb(
        [wire.WIRE_VERSION, _TAG, "n1", "n1:7946", True, False,
         [["n2", "n2:7946", 1, "alive", tags]], 1, 1, 1, [], [], [], "", []],
        use_bin_type=True,
    )


def test_push_pull_tags_are_checked_inline() -> None:
    good = wire.decode(_push_pull({"role": "db"}))
    assert isinstance(good, PushPull) and good.members[0].tags == {"role": "db"}
    for bad, reason in (
        ([], "MemberState.tags: expected map"),
        ({"role": 1}, "MemberState.tags: expected map of str to str"),
        ({b"role": "db"}, "MemberState.tags: expected map of str to str"),
    ):
        with pytest.raises(wire.WireError, match=reason):
            wire.decode(_push_pull(bad))


def _fresh(table: MemberTable) -> tuple[MemberState, ...]:
    return tuple(
        MemberState(r.name, r.addr, r.incarnation, r.status, r.tags)
        for r in (table.by_name[n] for n in table.names)
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("arta"), st.integers(0, 7)), max_size=60))
def test_the_table_keeps_its_push_pull_state_in_step(ops: list[tuple[str, int]]) -> None:
    # Random adds, removals and touched changes (in any order, asked for the state
    # in between or not): the incremental state always equals a fresh one.
    table = MemberTable()
    for op, k in ops:
        name = f"m{k}"
        rec = table.get(name)
        if op == "a" and rec is None:
            table.add(MemberRecord(name, f"{name}:1", 0, "alive", {}, 0.0))
        elif op == "r":
            table.remove(name)
        elif op == "t" and rec is not None:
            rec.incarnation += 1
            rec.tags = {"k": str(rec.incarnation)}
            table.set_status(rec, "suspect" if rec.status == "alive" else "alive", 1.0)
            table.touch(rec)
        if k % 2:
            assert table.wire_states() == _fresh(table)
    assert table.wire_states() == _fresh(table)


def test_every_change_of_view_in_a_faulty_run_reaches_the_push_pull_state() -> None:
    # The core touches a record wherever it traces a change; a change it failed to
    # touch would leave an old entry in the state it sends. Crashes, restarts,
    # partitions, pauses, reaping, tag and address changes, a leave.
    sim = Simulation(3, link=LinkConfig(loss=0.02))
    wl = GossipWorkload(argparse.Namespace(nodes=10, duration=200.0))
    wl.config = attrs.evolve(wl.config, reconnect_timeout=40.0, reap_interval=5.0,
                             tombstone_timeout=40.0)
    wl.setup(sim)
    sim.at(20.0, sim.crash, "n4")
    sim.at(30.0, sim.partition, [["n1", "n2", "n3", "n5"], ["n6", "n7", "n8", "n9", "n10"]])
    sim.at(45.0, sim.heal)
    sim.at(50.0, sim.pause, "n6")
    sim.at(62.0, sim.resume, "n6")
    sim.at(70.0, lambda: sim.app("n2").call(lambda c, now: c.set_tags(now, {"r": "x"})))
    sim.at(75.0, lambda: sim.app("n3").call(lambda c, now: c.set_address(now, "n3:7946")))
    sim.at(80.0, lambda: sim.app("n5").call(lambda c, now: c.leave(now)))
    sim.at(110.0, sim.restart, "n4")
    checked = 0
    for t in range(10, 181, 10):
        sim.run_until(float(t))
        for name in sim.names:
            app = sim.app(name)
            if app is not None:
                table = app.core.table
                assert table.wire_states() == _fresh(table), (t, name)
                checked += 1
    assert checked > 150
    counts = sim.tracer.counts
    assert counts.get("gossip.reap", 0) > 0 and counts.get("gossip.refute", 0) > 0


def test_a_member_learnt_from_a_push_pull_entry_keeps_that_entry() -> None:
    import random

    from clusterfunk.gossip.core import GossipCore

    core = GossipCore("a", "a:7946", random.Random(1))
    core.start(0.0)
    entry = MemberState("m1", "m1:7946", 4, "alive", {"role": "db"})
    core._merge_state(1.0, (entry,), rebroadcast=False)
    rec = core.table.by_name["m1"]
    assert rec.wire_state() is entry and rec.tags is entry.tags
    assert core.table.wire_states() == _fresh(core.table)
    assert core.member("m1").tags == {"role": "db"}
    assert core.member("m1").tags is not entry.tags  # snapshots are copies
    rec.incarnation = 5  # a later change makes a new entry
    assert rec.wire_state() is not entry and rec.wire_state().incarnation == 5
    with pytest.raises(ValueError):  # a member is added once, as by add()
        core.table.add_entry(MemberState("m1", "m1:7946", 9, "alive", {}), 2.0)
    assert core.table.by_name["m1"] is rec and len(core.table) == 2
