"""Scripted scenarios in the simulator: detection, refutation, leave versus failure,
rejoin after a restart, reaping and tombstones."""

from __future__ import annotations

import attrs
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clusterfunk.gossip import events as ev
from clusterfunk.gossip.config import LAN
from clusterfunk.gossip.messages import Alive, Suspect
from clusterfunk.sim.netmodel import LinkConfig


def all_alive(c) -> bool:
    return c.all_alive()


def test_cluster_forms_and_every_node_traces_every_member(cluster_factory):
    c = cluster_factory(6, seed=11)
    c.run(15.0)
    assert all_alive(c)
    for x in c.sim.names:
        # first sight of every member (and the node's own entry) is traced as alive
        seen = {r["member"] for r in c.member_trace(node=x) if r["status"] == "alive"}
        assert seen == set(c.sim.names)
    assert not [r for r in c.tracer.of("gossip.member") if r["status"] != "alive"]


def test_crashed_member_is_declared_dead_by_every_survivor(cluster_factory):
    c = cluster_factory(5, seed=2)
    c.run(10.0)
    assert all_alive(c)
    c.sim.crash("n4")
    c.run(40.0)
    for x in c.live():
        assert c.view(x, "n4")[0] == "dead"
        assert any(isinstance(e, ev.MemberFailed) and e.member.name == "n4" for e in c.events[x])
        assert not any(isinstance(e, ev.MemberLeft) for e in c.events[x])
    dead = [r for r in c.member_trace(member="n4") if r["status"] == "dead"]
    assert len(dead) == 4
    # LAN, 5 nodes: Serf needs 6.9-8.8 s; allow a generous bound for the worst case
    assert max(r["t"] for r in dead) - 10.0 < 20.0
    # nobody else was ever suspected
    assert not [
        r for r in c.tracer.of("gossip.member") if r["member"] != "n4" and r["status"] != "alive"
    ]


def test_suspicion_is_refuted_with_a_higher_incarnation(cluster_factory):
    c = cluster_factory(5, seed=3)
    c.run(10.0)
    inc = c.view("n1", "n2")[1]
    # n1 (wrongly) suspects n2: as if its probe had failed
    c.call("n1", lambda core, now: core.on_message(now, "n1:7946", Suspect(inc, "n2", "n1"), False))
    assert c.view("n1", "n2") == ("suspect", inc)
    c.run(20.0)
    for x in c.sim.names:
        status, new_inc = c.view(x, "n2")
        assert status == "alive" and new_inc == inc + 1
    assert c.core("n2").stats["refutes"] == 1
    assert [r["incarnation"] for r in c.tracer.of("gossip.refute") if r["node"] == "n2"] == [
        inc + 1
    ]
    assert not [r for r in c.tracer.of("gossip.member") if r["status"] == "dead"]
    # n1 saw the suspicion cleared
    assert any(
        isinstance(e, ev.MemberUpdated) and e.member.name == "n2" and e.member.status == "alive"
        for e in c.events["n1"]
    )


def test_leave_is_disseminated_as_leave_not_failure(cluster_factory):
    c = cluster_factory(5, seed=4)
    c.run(10.0)
    c.call("n3", lambda core, now: core.leave(now))
    c.run(12.0)
    c.sim.crash("n3")  # the process exits after its leave went out
    c.run(60.0)
    for x in c.live():
        assert c.view(x, "n3")[0] == "left"
        assert any(isinstance(e, ev.MemberLeft) and e.member.name == "n3" for e in c.events[x])
        assert not any(isinstance(e, ev.MemberFailed) for e in c.events[x])
    assert not [r for r in c.member_trace(member="n3") if r["status"] in ("dead", "suspect")]
    # n3 traced its own departure
    assert c.tracer.of("gossip.member")[-1]["ev"] == "gossip.member"
    own = [r for r in c.member_trace(node="n3", member="n3")]
    assert own[-1]["status"] == "left"


def test_rejoin_after_restart_jumps_above_the_old_incarnation(cluster_factory):
    c = cluster_factory(5, seed=5)
    c.run(10.0)
    # n2 refutes once so that its incarnation is not 0 before the crash
    c.call("n1", lambda core, now: core.on_message(now, "n1:7946", Suspect(0, "n2", "n1"), False))
    c.run(15.0)
    old_inc = c.view("n1", "n2")[1]
    assert old_inc == 1
    c.sim.crash("n2")
    c.run(45.0)
    assert all(c.view(x, "n2") == ("dead", old_inc) for x in c.live())
    c.sim.restart("n2")  # a fresh process: incarnation 0, nothing persisted
    assert c.core("n2").incarnation == 0
    c.run(75.0)
    new_inc = c.core("n2").incarnation
    assert new_inc > old_inc
    for x in c.sim.names:
        assert c.view(x, "n2") == ("alive", new_inc), x
        assert all_alive(c)
    for x in c.live():
        if x != "n2":
            assert any(
                isinstance(e, ev.MemberJoined)
                and e.member.name == "n2"
                and e.member.incarnation == new_inc
                for e in c.events[x]
            )


def test_quick_restart_before_detection_rejoins_cleanly(cluster_factory):
    c = cluster_factory(5, seed=6)
    c.run(10.0)
    c.sim.crash("n5")
    c.sim.at(10.5, c.sim.restart, "n5")
    c.run(60.0)
    assert all_alive(c)
    # back within half a second: nobody got to declare it dead, and the fresh process
    # (incarnation 0, same address and tags) agrees with everyone's entry
    assert not [r for r in c.member_trace(member="n5") if r["status"] == "dead"]
    assert all(c.view(x, "n5")[0] == "alive" for x in c.sim.names)


def test_reaping_of_failed_members_and_tombstones_for_left_ones(cluster_factory):
    cfg = attrs.evolve(LAN, reconnect_timeout=20.0, tombstone_timeout=40.0, reap_interval=2.0)
    c = cluster_factory(6, seed=7, config=cfg)
    c.run(10.0)
    c.sim.crash("n2")
    c.call("n3", lambda core, now: core.leave(now))
    c.run(11.0)
    c.sim.crash("n3")
    c.run(30.0)
    for x in c.live():
        assert c.view(x, "n2")[0] == "dead"
        assert c.view(x, "n3")[0] == "left"
    c.run(50.0)
    for x in c.live():
        assert c.view(x, "n2") is None  # reaped (dead > 20 s)
        assert c.view(x, "n3")[0] == "left"  # tombstone still kept
        # a stale alive about the departed member cannot resurrect it
    stale = Alive(0, "n3", "n3:7946", {})
    c.call("n1", lambda core, now: core.on_message(now, "n4:7946", stale, False))
    assert c.view("n1", "n3")[0] == "left"
    c.run(80.0)
    for x in c.live():
        assert c.view(x, "n3") is None
        reaped = [e.member.name for e in c.events[x] if isinstance(e, ev.MemberReaped)]
        assert sorted(reaped) == ["n2", "n3"]
    reaps = c.tracer.of("gossip.reap")
    assert {(r["member"], r["status"]) for r in reaps} == {("n2", "dead"), ("n3", "left")}


def test_no_false_positive_at_one_percent_loss(cluster_factory):
    c = cluster_factory(8, seed=8, link=LinkConfig(loss=0.01))
    c.run(300.0)
    assert all_alive(c)
    assert not [r for r in c.tracer.of("gossip.member") if r["status"] == "dead"]


def test_partition_heal_converges_through_reconnect(cluster_factory):
    c = cluster_factory(6, seed=9)
    c.run(10.0)
    c.sim.partition([["n1", "n2", "n3"], ["n4", "n5", "n6"]])
    c.run(60.0)
    assert c.view("n1", "n5")[0] == "dead" and c.view("n5", "n1")[0] == "dead"
    c.sim.heal()
    c.run(160.0)
    assert all_alive(c)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(3, 8),
    seed=st.integers(0, 10_000),
    leave_at=st.floats(5.0, 20.0),
    loss=st.sampled_from([0.0, 0.01, 0.03]),
)
# found by CI: n7 missed every gossip copy of n8's Leave, suspected the departed node
# and declared it dead 0.17 s before a push-pull brought the leave (fixed by the
# leaver's direct notice, GossipCore._tell_everyone)
@example(n=8, seed=1014, leave_at=8.0, loss=0.0)
def test_property_a_leave_is_never_reported_as_a_failure(cluster_factory, n, seed, leave_at, loss):
    c = cluster_factory(n, seed=seed, link=LinkConfig(loss=loss))
    leaver = f"n{n}"
    c.sim.at(leave_at, lambda: c.call(leaver, lambda core, now: core.leave(now)))
    c.sim.at(leave_at + 2.0, c.sim.crash, leaver)  # the process exits soon after
    c.run(leave_at + 90.0)
    for x in c.live():
        assert c.view(x, leaver)[0] == "left", (x, c.view(x, leaver))
    assert not [r for r in c.member_trace(member=leaver) if r["status"] == "dead"]
    # and nobody else was declared dead either
    assert not [r for r in c.tracer.of("gossip.member") if r["status"] == "dead"]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(3, 7),
    seed=st.integers(0, 10_000),
    down_for=st.floats(0.2, 60.0),
    refutes=st.integers(0, 3),
)
def test_property_restart_rejoins_above_every_incarnation_seen(
    cluster_factory, n, seed, down_for, refutes
):
    c = cluster_factory(n, seed=seed)
    c.run(5.0)
    for _ in range(refutes):  # give n2 a history of incarnations
        inc = c.core("n2").incarnation
        c.call(
            "n1",
            lambda core, now, inc=inc: core.on_message(now, "", Suspect(inc, "n2", "n1"), False),
        )
        c.run(c.sim.now + 3.0)
    c.run(15.0)
    c.sim.crash("n2")
    c.sim.at(15.0 + down_for, c.sim.restart, "n2")
    c.run(15.0 + down_for + 60.0)
    highest = max(r["incarnation"] for r in c.member_trace(member="n2") if r["node"] != "n2")
    inc = c.core("n2").incarnation
    assert inc >= refutes
    assert c.all_alive()
    for x in c.sim.names:
        assert c.view(x, "n2") == ("alive", inc)
    # if anyone had n2 at a higher incarnation than the fresh process, it jumped above
    assert inc >= highest
    assert not [
        r for r in c.tracer.of("gossip.member") if r["status"] == "dead" and r["member"] != "n2"
    ]


def test_a_paused_member_declared_dead_refutes_when_it_resumes(cluster_factory):
    c = cluster_factory(5, seed=12)
    c.run(10.0)
    c.sim.pause("n3")  # a long GC pause / SIGSTOP
    c.run(70.0)
    assert all(c.view(x, "n3")[0] == "dead" for x in c.sim.names if x != "n3")
    c.sim.resume("n3")
    c.run(140.0)  # a push-pull or a reconnect tells n3 it was declared dead
    assert c.all_alive()
    inc = c.core("n3").incarnation
    assert inc >= 1
    assert all(c.view(x, "n3") == ("alive", inc) for x in c.sim.names)
    assert [r["incarnation"] for r in c.tracer.of("gossip.refute") if r["node"] == "n3"][-1] == inc
    # nobody but the paused member was ever declared dead
    assert {r["member"] for r in c.tracer.of("gossip.member") if r["status"] == "dead"} == {"n3"}


def test_leave_drains_its_broadcasts_and_a_lone_node_has_nothing_pending(cluster_factory):
    c = cluster_factory(4, seed=14)
    c.run(10.0)
    c.call("n2", lambda core, now: core.leave(now))
    assert c.core("n2").pending_broadcasts() > 0
    c.run(13.0)
    assert c.core("n2").pending_broadcasts() == 0
    assert all(c.view(x, "n2")[0] == "left" for x in ("n1", "n3", "n4"))
    lone = cluster_factory(1, seed=15)
    lone.run(5.0)
    lone.call("n1", lambda core, now: core.leave(now))
    assert lone.core("n1").pending_broadcasts() == 0
