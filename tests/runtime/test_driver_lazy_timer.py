"""The driver's lazy timer (``Driver(lazy_timer=True)``, used for Raft): re-arming
never ticks the core late, never before its deadline, and arms a deadline that
moved earlier at once; and the step-end hooks run once per step with events."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.runtime.api import Output
from clusterfunk.runtime.driver import Driver


class FakeCore:
    def __init__(self) -> None:
        self.deadline = math.inf
        self.ticks: list[float] = []
        self.out = Output()

    def start(self, now: float) -> None: ...

    def on_message(self, *a: object) -> None: ...

    def drain(self) -> Output | None:
        out, self.out = self.out, Output()
        return out if out else None

    def next_deadline(self) -> float:
        return self.deadline

    def on_tick(self, now: float) -> None:
        assert now >= self.deadline, "ticked before its deadline"
        self.ticks.append(now)
        self.deadline = math.inf


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.armed = math.inf
        self.schedules = 0

    def now(self) -> float:
        return self.t

    def schedule(self, driver: Any, deadline: float) -> None:
        self.armed = deadline
        self.schedules += 1


class Transport:
    local_address = "me:1"
    max_datagram = 1400

    def bind(self, handler: Any) -> None: ...

    def send_datagram(self, dest: str, data: bytes) -> None: ...

    def send_frame(self, dest: str, data: bytes) -> None: ...


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.booleans()), min_size=1, max_size=40))
def test_lazy_rearm_ticks_exactly_when_due(moves: list[tuple[float, bool]]) -> None:
    """The timer fires at the armed deadline; in between, steps move the core's
    deadline later or earlier. The core is ticked at its deadline, never before
    (FakeCore asserts it) and never after."""
    core, clock = FakeCore(), Clock()
    d = Driver("n1", core, Transport(), clock, lazy_timer=True)
    d.start()
    for dt, move in moves:
        if move:  # a step moves the core's deadline to now + dt
            d.call(lambda c, now, dt=dt: setattr(c, "deadline", now + dt))
        assert clock.armed <= core.deadline  # invariant: never armed after the core's
        nxt = clock.t + 0.5  # the next step, unless the timer fires first
        if clock.armed <= nxt:
            clock.t = max(clock.t, clock.armed)
            due = core.deadline
            d.on_timer()
            if due <= clock.t:
                assert core.ticks and core.ticks[-1] == clock.t == due
        else:
            clock.t = nxt


def test_lazy_timer_keeps_the_armed_deadline_while_the_core_moves_later() -> None:
    core, clock = FakeCore(), Clock()
    d = Driver("n1", core, Transport(), clock, lazy_timer=True)
    d.start()
    d.call(lambda c, now: setattr(c, "deadline", 1.0))
    first = clock.schedules
    for i in range(100):  # a follower's election deadline moving on every append
        d.call(lambda c, now, i=i: setattr(c, "deadline", 1.0 + 0.01 * i))
    assert clock.schedules == first and clock.armed == 1.0
    exact = Driver("n2", FakeCore(), Transport(), Clock())
    exact.start()
    for i in range(100):
        exact.call(lambda c, now, i=i: setattr(c, "deadline", 1.0 + 0.01 * i))
    assert exact.clock.schedules == 100  # type: ignore[attr-defined]


def test_step_end_hooks_run_once_per_step_with_events() -> None:
    core, clock = FakeCore(), Clock()
    d = Driver("n1", core, Transport(), clock)
    seen: list[str] = []
    d.subscribe(lambda ev: seen.append(f"event {ev}"))
    remove = d.on_step_end(lambda: seen.append("end"))
    d.start()
    d.call(lambda c, now: c.out.events.extend(["a", "b"]))
    d.call(lambda c, now: None)  # a step without events: no hook
    d.call(lambda c, now: c.out.events.append("c"))
    assert seen == ["event a", "event b", "end", "event c", "end"]
    remove()
    d.call(lambda c, now: c.out.events.append("d"))
    assert seen[-1] == "event d"
