"""Hypothesis drives the Raft simulation with faults; safety after every step,
liveness and durability after healing.

A synchronous ``RuleBasedStateMachine`` (hypothesis-trio is broken): every rule
acts on the deterministic simulator (partitions, crashes and restarts, pauses,
loss / duplication / reordering, clock skew) and lets virtual time run. After every
step the online safety checker must be clean and the log checks are run. At the end
everything is healed; then within ``LIVENESS_TIMEOUTS`` election timeouts a leader
must be elected that a majority follows, every acknowledged write must be in its
log, and the clients' KV history plus a final read of every key must be
linearizable.
"""

from __future__ import annotations

import argparse

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from clusterfunk.sim.netmodel import LinkConfig
from clusterfunk.sim.simulation import Simulation
from clusterfunk.sim.workloads.raft import RaftWorkload

ELECTION = 1.0
LIVENESS_TIMEOUTS = 10


def make(seed: int, nodes: int) -> tuple[Simulation, RaftWorkload]:
    args = argparse.Namespace(
        nodes=nodes,
        duration=10_000.0,
        clients=3,
        keys=3,
        op_rate=20.0,
        read_index=0.5,
        election_timeout=ELECTION,
        op_timeout=3.0,
        check_every=0.5,
    )
    sim = Simulation(seed)
    wl = RaftWorkload(args)
    wl.setup(sim)
    sim.start()
    return sim, wl


def check_liveness_and_durability(sim: Simulation, wl: RaftWorkload) -> None:
    problems = wl.heal_and_check(LIVENESS_TIMEOUTS)
    assert problems == [], problems


class RaftNemesis(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sim: Simulation | None = None
        self.wl: RaftWorkload | None = None

    @initialize(seed=st.integers(0, 2**32 - 1), nodes=st.sampled_from([3, 5]))
    def boot(self, seed: int, nodes: int) -> None:
        self.sim, self.wl = make(seed, nodes)
        self.sim.run_for(2.0)

    def names(self) -> list[str]:
        assert self.sim is not None
        return self.sim.names

    @rule(dt=st.floats(0.05, 3.0))
    def run(self, dt: float) -> None:
        self.sim.run_for(dt)

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        self.sim.crash(data.draw(st.sampled_from(self.names())))
        self.sim.run_for(0.2)

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        self.sim.restart(data.draw(st.sampled_from(self.names())))
        self.sim.run_for(0.2)

    @rule(data=st.data())
    def crash_leader(self, data: st.DataObject) -> None:
        leader = self.wl.leader()
        if leader is not None:
            self.sim.crash(leader)
        self.sim.run_for(data.draw(st.floats(0.1, 3.0)))

    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.sim.pause(data.draw(st.sampled_from(self.names())))
        self.sim.run_for(data.draw(st.floats(0.1, 3.0)))

    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        self.sim.resume(data.draw(st.sampled_from(self.names())))

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        names = self.names()
        side = data.draw(
            st.lists(st.sampled_from(names), min_size=1, max_size=len(names) - 1, unique=True)
        )
        self.sim.partition([side])
        self.sim.run_for(data.draw(st.floats(0.1, 3.0)))

    @rule(data=st.data())
    def partition_oneway(self, data: st.DataObject) -> None:
        names = self.names()
        src = data.draw(st.sampled_from(names))
        dst = data.draw(
            st.lists(st.sampled_from([n for n in names if n != src]), min_size=1, unique=True)
        )
        self.sim.partition_oneway([src], dst)
        self.sim.run_for(data.draw(st.floats(0.1, 3.0)))

    @rule()
    def heal(self) -> None:
        self.sim.heal()

    @rule(loss=st.floats(0, 0.3), dup=st.floats(0, 0.3), reorder=st.floats(0, 0.3))
    def link(self, loss: float, dup: float, reorder: float) -> None:
        self.sim.set_default_link(
            LinkConfig(latency=0.001, jitter=0.002, loss=loss, duplicate=dup, reorder=reorder)
        )

    @rule(data=st.data(), offset=st.floats(-0.5, 0.5), drift=st.floats(-0.05, 0.05))
    def skew(self, data: st.DataObject, offset: float, drift: float) -> None:
        self.sim.set_skew(data.draw(st.sampled_from(self.names())), offset, drift)

    @precondition(lambda self: self.sim is not None)
    @invariant()
    def safe(self) -> None:
        self.wl.checker.check_logs(self.sim.now)
        assert self.wl.checker.violations == [], self.wl.checker.violations

    def teardown(self) -> None:
        if self.sim is not None:
            check_liveness_and_durability(self.sim, self.wl)


RaftNemesis.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRaftNemesis = RaftNemesis.TestCase
