"""A stateful Hypothesis test: random crashes, restarts, partitions, heals, leaves
and tag changes in a small simulated cluster. Invariants are checked on the trace
as it is produced; at the end, with the network healed and every node back up,
all views must converge to the same, current incarnations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

# The harness lives in this directory's conftest.py; load it under its own name
# (other test directories have a conftest.py too).
_spec = importlib.util.spec_from_file_location(
    "gossip_a_harness", Path(__file__).with_name("conftest.py")
)
assert _spec is not None and _spec.loader is not None
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)
Cluster = _harness.Cluster

N = 5
NAMES = [f"n{i}" for i in range(1, N + 1)]


class GossipMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16), loss=st.sampled_from([0.0, 0.01]))
    def setup(self, seed, loss):
        from clusterfunk.sim.netmodel import LinkConfig

        self.c = Cluster(N, seed=seed, link=LinkConfig(loss=loss))
        self.last: dict[tuple[str, str], int] = {}
        self.violations: list[str] = []
        self.c.tracer.listeners.append(self._check)
        self.c.run(5.0)

    def _check(self, rec):
        ev = rec["ev"]
        if ev == "sim.crash":  # a restarted node starts from nothing
            t = rec["target"]
            for key in [k for k in self.last if k[0] == t]:
                del self.last[key]
        elif ev == "gossip.reap":
            self.last.pop((rec["node"], rec["member"]), None)
        elif ev == "gossip.member":
            key = (rec["node"], rec["member"])
            if rec["status"] not in ("alive", "suspect", "dead", "left"):
                self.violations.append(f"bad status {rec}")
            prev = self.last.get(key)
            if prev is not None and rec["incarnation"] < prev:
                self.violations.append(f"incarnation went backwards: {rec} after {prev}")
            self.last[key] = rec["incarnation"]
            if rec["member"] not in NAMES:
                self.violations.append(f"unknown member invented: {rec}")

    def _advance(self, dt):
        self.c.run(self.c.sim.now + dt)

    @rule(i=st.integers(0, N - 1), dt=st.floats(0.5, 15.0))
    def crash(self, i, dt):
        self.c.sim.crash(NAMES[i])
        self._advance(dt)

    @rule(i=st.integers(0, N - 1), dt=st.floats(0.5, 15.0))
    def restart(self, i, dt):
        self.c.sim.restart(NAMES[i])
        self._advance(dt)

    @rule(k=st.integers(1, N - 1), dt=st.floats(1.0, 30.0))
    def partition(self, k, dt):
        self.c.sim.partition([NAMES[:k], NAMES[k:]])
        self._advance(dt)

    @rule(dt=st.floats(0.5, 10.0))
    def heal(self, dt):
        self.c.sim.heal()
        self._advance(dt)

    @rule(i=st.integers(0, N - 1), dt=st.floats(0.5, 10.0))
    def leave_and_exit(self, i, dt):
        name = NAMES[i]
        if self.c.sim.alive(name):
            self.c.call(name, lambda core, now: core.leave(now))
            self.c.sim.at(self.c.sim.now + 1.0, self.c.sim.crash, name)
        self._advance(dt)

    @rule(i=st.integers(0, N - 1), v=st.text("abc", max_size=5))
    def set_tags(self, i, v):
        name = NAMES[i]
        if self.c.sim.alive(name) and not self.c.core(name).leaving:
            self.c.call(name, lambda core, now: core.set_tags(now, {"v": v}))
        self._advance(1.0)

    @invariant()
    def no_violation(self):
        assert not self.violations, self.violations[:3]

    def teardown(self):
        if not hasattr(self, "c"):
            return
        c = self.c
        c.sim.heal()
        c.run(c.sim.now + 2.0)  # let scheduled exits (after a leave) happen first
        for name in NAMES:
            if not c.sim.alive(name):
                c.sim.restart(name)
        # restarted members rejoin through all the others (the harness joins on boot)
        c.run(c.sim.now + 150.0)
        assert not self.violations, self.violations[:3]
        assert c.all_alive(), {x: c.statuses(x) for x in NAMES}
        for x in NAMES:
            for y in NAMES:
                assert c.view(x, y) == ("alive", c.core(y).incarnation), (x, y)
                assert c.core(x).member(y).tags == c.core(y).local_member.tags


GossipMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=10, deadline=None)
test_gossip_machine = GossipMachine.TestCase
