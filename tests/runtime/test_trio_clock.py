"""TrioClock on trio's MockClock: timers fire at the right virtual time and re-arm."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from clusterfunk.runtime.trio_host import TrioClock


class FakeDriver:
    """Records the virtual times at which its timer fired."""

    def __init__(self) -> None:
        self.fired: list[float] = []
        self.then: list[float] = []  # deadlines to schedule from inside on_timer
        self.clock: TrioClock | None = None
        self.boom = False

    def on_timer(self) -> None:
        self.fired.append(trio.current_time())
        if self.boom:
            raise RuntimeError("core bug")
        if self.then and self.clock is not None:
            self.clock.schedule(self, self.then.pop(0))


async def test_timer_fires_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = TrioClock(nursery)
        d = FakeDriver()
        assert clock.now() == trio.current_time()
        t0 = clock.now()
        clock.schedule(d, t0 + 2.5)
        await trio.sleep(2.4)
        assert d.fired == []
        await trio.sleep(0.2)
        assert d.fired == [pytest.approx(t0 + 2.5)]
        await trio.sleep(10)
        assert len(d.fired) == 1  # one shot until re-armed
        nursery.cancel_scope.cancel()


async def test_rearming_moves_the_single_timer(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = TrioClock(nursery)
        d = FakeDriver()
        t0 = clock.now()
        clock.schedule(d, t0 + 5)
        await trio.sleep(1)
        clock.schedule(d, t0 + 3)  # earlier
        await trio.sleep(1)
        clock.schedule(d, t0 + 4)  # later again
        await trio.sleep(10)
        assert d.fired == [pytest.approx(t0 + 4)]
        clock.schedule(d, math.inf)  # disarm
        await trio.sleep(100)
        assert len(d.fired) == 1
        clock.schedule(d, clock.now() - 1)  # a past deadline fires at once
        await trio.testing.wait_all_tasks_blocked()
        assert len(d.fired) == 2
        nursery.cancel_scope.cancel()


async def test_rearm_from_inside_on_timer(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = TrioClock(nursery)
        d = FakeDriver()
        d.clock = clock
        t0 = clock.now()
        d.then = [t0 + 2, t0 + 3.5]
        clock.schedule(d, t0 + 1)
        await trio.sleep(10)
        assert d.fired == [pytest.approx(t0 + x) for x in (1, 2, 3.5)]
        assert clock.fired == 3
        nursery.cancel_scope.cancel()


async def test_one_task_per_driver(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        clock = TrioClock(nursery)
        drivers = [FakeDriver() for _ in range(3)]
        before = len(nursery.child_tasks)
        for i, d in enumerate(drivers):
            for k in range(50):
                clock.schedule(d, clock.now() + 10 + i + k * 0.01)
        assert len(nursery.child_tasks) == before + 3
        await trio.sleep(20)
        assert [len(d.fired) for d in drivers] == [1, 1, 1]
        assert drivers[2].fired[0] == pytest.approx(drivers[0].fired[0] + 2)
        nursery.cancel_scope.cancel()


async def test_handler_error_is_counted_and_raised(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[BaseException] = []
    d = FakeDriver()
    d.boom = True
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="core bug")):
        async with trio.open_nursery() as nursery:
            clock = TrioClock(nursery, on_handler_error=seen.append)
            clock.schedule(d, clock.now() + 1)
            await trio.sleep(5)
    assert len(seen) == 1


async def test_handler_error_tolerated_when_not_fail_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    d = FakeDriver()
    d.boom = True
    seen: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        clock = TrioClock(nursery, fail_stop=False, on_handler_error=seen.append)
        clock.schedule(d, clock.now() + 1)
        await trio.sleep(2)
        clock.schedule(d, clock.now() + 1)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert len(d.fired) == 2 and len(seen) == 2
