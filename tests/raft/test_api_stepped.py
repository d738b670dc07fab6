"""The driver's view of the core (``api._Stepped``): lazy timer re-arming never
ticks the core late, never ticks it before its deadline, and arms a deadline that
moved earlier at once."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft.api import STEP_END, _Stepped


class FakeCore:
    def __init__(self) -> None:
        self.deadline = math.inf
        self.ticks: list[float] = []

    def start(self, now: float) -> None: ...
    def on_message(self, *a: object) -> None: ...
    def drain(self) -> None:
        return None

    def next_deadline(self) -> float:
        return self.deadline

    def on_tick(self, now: float) -> None:
        assert now >= self.deadline, "ticked before its deadline"
        self.ticks.append(now)
        self.deadline = math.inf


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.booleans()), min_size=1, max_size=30))
def test_lazy_rearm_ticks_exactly_when_due(moves):
    """A driver loop: the timer fires at the armed deadline; in between, the core's
    deadline moves (later or earlier) as steps happen. The core is ticked at its
    deadline (never before, never after), whatever the moves."""
    core = FakeCore()
    s = _Stepped(core)
    now = 0.0
    for dt, move in moves:
        if move:  # a step moves the core's deadline to now + dt
            core.deadline = now + dt
        armed = s.next_deadline()
        assert armed <= core.deadline  # invariant: never armed after the core's deadline
        # the timer fires at `armed` unless the next step comes first
        nxt = now + 0.5
        if armed <= nxt:
            now = max(now, armed)
            due = core.deadline
            s.on_tick(now)
            if due <= now:
                assert core.ticks and core.ticks[-1] == now == due
        else:
            now = nxt


def test_step_end_marks_each_step_with_events():
    class C(FakeCore):
        def drain(self):
            from clusterfunk.runtime.api import Output

            out = Output()
            out.events.append("ev")
            return out

    out = _Stepped(C()).drain()
    assert out.events == ["ev", STEP_END]
