"""The driver's obligations, in order: decode (drop and count junk), feed the core,
persist before sending, send (refuse oversize), publish events, trace, re-arm."""

from __future__ import annotations

import math
from typing import Any

from clusterfunk import wire
from clusterfunk.demo.ping import Ping, Pong
from clusterfunk.runtime.api import Output
from clusterfunk.runtime.driver import Driver
from clusterfunk.trace import Tracer


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []


class FakeTransport:
    local_address = "me:1"
    max_datagram = 100

    def __init__(self, log: Log) -> None:
        self.log = log
        self.handler: Any = None

    def bind(self, handler: Any) -> None:
        self.handler = handler

    def send_datagram(self, dest: str, data: bytes) -> None:
        self.log.lines.append(f"dgram {dest} {type(wire.decode(data)).__name__}")

    def send_frame(self, dest: str, data: bytes) -> None:
        self.log.lines.append(f"frame {dest} {type(wire.decode(data)).__name__}")


class FakeClock:
    def __init__(self, log: Log) -> None:
        self.t = 0.0
        self.log = log
        self.armed: list[float] = []

    def now(self) -> float:
        return self.t

    def schedule(self, driver: Any, deadline: float) -> None:
        self.armed.append(deadline)


class FakePersister:
    """Synchronous: logs each batch and reports it durable at once."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.handler: Any = None

    def bind(self, handler: Any) -> None:
        self.handler = handler

    def persist(self, records: list[Any], token: int) -> None:
        self.log.lines.append(f"persist {records}")
        if token:
            self.handler.on_persisted(token)


class EchoCore:
    """Answers a Ping with a persisted record, a Pong, an event and a trace record."""

    def __init__(self) -> None:
        self.out = Output()
        self.deadline = 5.0
        self.ticks: list[float] = []
        self.token = 0
        self.durable = 0

    def on_persisted(self, now: float, token: int) -> None:
        self.durable = token

    def start(self, now: float) -> None:
        self.out.emit("echo.start")

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.token += 1
        self.out.persist.append(("seen", msg.seq))
        self.out.persist_token = self.out.wait_token = self.token  # the Pong needs it durable
        self.out.send(src, Pong(msg.seq, msg.sent), stream=stream)
        self.out.events.append(("pinged", msg.seq))
        self.out.emit("echo.ping", seq=msg.seq)
        self.deadline = now + 1.0

    def on_tick(self, now: float) -> None:
        self.ticks.append(now)
        self.deadline = math.inf

    def next_deadline(self) -> float:
        return self.deadline

    def drain(self) -> Output | None:
        out, self.out = self.out, Output()
        return out if out else None


def make() -> tuple[Driver, EchoCore, Log, FakeClock, Tracer]:
    log = Log()
    core = EchoCore()
    clock = FakeClock(log)
    tracer = Tracer(clock.now, keep=True)
    d = Driver("n1", core, FakeTransport(log), clock, tracer=tracer, persister=FakePersister(log))
    d.subscribe(lambda ev: log.lines.append(f"event {ev}"))
    d.start()
    return d, core, log, clock, tracer


def test_persist_happens_before_send_then_events() -> None:
    d, core, log, clock, tracer = make()
    clock.t = 2.0
    d.on_datagram("peer:9", wire.encode(Ping(7, 1.5)))
    d.on_frame("peer:9", wire.encode(Ping(8, 1.5)))
    assert log.lines == [
        "persist [('seen', 7)]",
        "dgram peer:9 Pong",
        "event ('pinged', 7)",
        "persist [('seen', 8)]",
        "frame peer:9 Pong",
        "event ('pinged', 8)",
    ]
    assert [(r["t"], r["node"], r["ev"]) for r in tracer.records] == [
        (0.0, "n1", "echo.start"),
        (2.0, "n1", "echo.ping"),
        (2.0, "n1", "echo.ping"),
    ]
    assert clock.armed == [5.0, 3.0]  # re-armed only when the deadline changed
    assert core.durable == 2  # the core was told each batch is durable


def test_junk_is_dropped_counted_and_traced() -> None:
    d, _core, log, _clock, tracer = make()
    d.on_datagram("peer:9", b"\xff\x00junk")
    d.on_frame("peer:9", b"")
    assert d.stats.malformed == 2
    assert log.lines == []
    assert [r["ev"] for r in tracer.records][-2:] == ["net.malformed", "net.malformed"]


def test_oversize_datagram_refused_but_frames_are_not_limited() -> None:
    d, _core, log, _clock, tracer = make()
    d.call(lambda c, now: c.out.send("peer:9", Ping(1, 0.0, bytes(200))))
    d.call(lambda c, now: c.out.send("peer:9", Ping(2, 0.0, bytes(200)), stream=True))
    assert d.stats.oversize == 1
    assert log.lines == ["frame peer:9 Ping"]
    assert tracer.of("net.oversize")[0]["bytes"] > 100


def test_timer_ticks_only_when_due_and_rearms_after_spurious_wakeups() -> None:
    d, core, _log, clock, _tracer = make()
    clock.t = 4.0
    d.on_timer()  # spurious: not due yet
    assert core.ticks == []
    assert clock.armed[-1] == 5.0
    clock.t = 5.0
    d.on_timer()
    assert core.ticks == [5.0]
    assert clock.armed[-1] == math.inf


def test_a_core_whose_tick_leaves_its_deadline_due_is_not_ticked_in_a_spin() -> None:
    """A core bug (its tick leaves its own deadline in the past) would make the
    driver tick it forever at one instant; the driver counts it and waits
    STUCK_TIMER_DELAY before the next tick."""
    from clusterfunk.runtime.driver import STUCK_TIMER_DELAY

    d, core, _log, clock, _tracer = make()
    core.on_tick = lambda now: core.ticks.append(now)  # type: ignore[method-assign]
    clock.t = 5.0
    d.on_timer()
    assert core.ticks == [5.0] and d.stats.stuck_timers == 1
    assert clock.armed[-1] == 5.0 + STUCK_TIMER_DELAY


def test_stopped_driver_ignores_input() -> None:
    d, core, log, clock, _ = make()
    d.stop()
    d.on_datagram("peer:9", wire.encode(Ping(7, 1.5)))
    clock.t = 10.0
    d.on_timer()
    assert log.lines == [] and core.ticks == []


def test_one_message_sent_to_many_peers_is_encoded_once() -> None:
    d, _core, log, _clock, _ = make()
    calls: list[object] = []
    d.encode = lambda m: (calls.append(m), wire.encode(m))[1]
    shared = Pong(1, 0.0)
    d.call(lambda c, now: [c.out.send(f"p{i}:1", shared) for i in range(5)])
    d.call(lambda c, now: [c.out.send(f"p{i}:1", Pong(i, 0.0)) for i in range(3)])
    assert len(calls) == 1 + 3
    assert log.lines[:5] == [f"dgram p{i}:1 Pong" for i in range(5)]


def test_the_stuck_timer_check_sees_what_an_after_step_hook_did_to_the_core() -> None:
    """The check after a tick reuses the deadline the flush read, unless a hook ran
    after that read: then it asks the core again."""
    d, core, _log, clock, _tracer = make()
    clock.t = 5.0
    d.after_step(lambda: setattr(core, "deadline", 5.0))  # leaves the core due again
    d.on_timer()
    assert core.ticks == [5.0] and d.stats.stuck_timers == 1


def test_a_tick_that_moves_the_deadline_later_is_not_stuck() -> None:
    d, core, _log, clock, _tracer = make()
    core.on_tick = lambda now: setattr(core, "deadline", now + 2.0)  # type: ignore[method-assign]
    clock.t = 5.0
    d.on_timer()
    assert d.stats.stuck_timers == 0 and clock.armed[-1] == 7.0
