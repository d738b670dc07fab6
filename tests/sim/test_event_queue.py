"""The simulator's event queue and its decode memo.

The queue keeps each time's events in scheduling order (the determinism contract:
ties are broken by the order events were scheduled), also for events scheduled at
the current time while that time's events run, and across a ``stop()``.
The decode memo hands every receipt of the same bytes one decoded, immutable
message; everything else is decoded at every receipt.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from clusterfunk import wire
from clusterfunk.raft.messages import Heartbeat
from clusterfunk.sim.simulation import DecodeMemo, Simulation
from tests.sim.helpers import Probe, recorder_sim, send


def test_events_at_one_time_run_in_scheduling_order_with_late_joiners() -> None:
    sim = Simulation(seed=1)
    sim.start()
    ran: list[str] = []

    def at_one(name: str) -> None:
        ran.append(name)
        if name == "b":  # scheduled now, at 1.0: after everything already queued at 1.0
            sim.at(1.0, ran.append, "b-now")
            sim.at(0.5, ran.append, "b-past")  # not before now: runs at 1.0 too

    sim.at(2.0, ran.append, "z")
    for name in "abc":
        sim.at(1.0, at_one, name)
    sim.at(1.5, ran.append, "y")
    sim.run_until(10.0)
    assert ran == ["a", "b", "c", "b-now", "b-past", "y", "z"]


def test_stop_in_the_middle_of_one_time_keeps_the_rest_queued() -> None:
    sim = Simulation(seed=1)
    sim.start()
    ran: list[int] = []
    for i in range(6):
        sim.at(1.0, ran.append, i)
    sim.at(3.0, ran.append, 99)
    sim.run_until(10.0, stop=lambda: len(ran) == 2)
    assert ran == [0, 1] and sim.now == 1.0
    sim.at(1.0, ran.append, 6)  # joins the unfinished time, after its queued events
    sim.run_until(10.0)
    assert ran == [0, 1, 2, 3, 4, 5, 6, 99]


def test_random_schedules_run_in_time_then_scheduling_order() -> None:
    """Against a reference: a stable sort of (time, scheduling order)."""
    rng = random.Random(7)
    sim = Simulation(seed=1)
    sim.start()
    ran: list[int] = []
    times = [rng.choice([0.5, 1.0, 1.0, 2.0, rng.random() * 3]) for _ in range(500)]
    for i, t in enumerate(times):
        sim.at(t, ran.append, i)
    sim.run_until(5.0)
    assert ran == sorted(range(500), key=lambda i: (times[i], i))
    assert sim.stats["events"] == 500


def test_the_memo_decodes_repeated_bytes_once() -> None:
    memo = DecodeMemo()
    data = wire.encode(Heartbeat(3, "n1", 7, 9))
    first = memo.decode(data)
    assert first == Heartbeat(3, "n1", 7, 9)
    assert memo.decode(bytes(data)) is first  # equal bytes, another object: a hit
    assert memo.hits == 1


@wire.message(23)
@attrs.frozen
class Tagged:
    tags: dict[str, str]


def test_the_memo_never_shares_mutable_messages_nor_remembers_junk() -> None:
    memo = DecodeMemo()
    data = wire.encode(Tagged({"a": "b"}))
    one, two = memo.decode(data), memo.decode(data)
    assert one == two and one is not two
    for _ in range(2):
        try:
            memo.decode(b"\xff\x00junk")
        except wire.WireError:
            pass
        else:
            raise AssertionError("junk decoded")
    assert memo.hits == 0 and not memo._memo


def test_the_memo_is_bounded_and_drops_classes_that_never_repeat() -> None:
    memo = DecodeMemo(max_entries=8)
    for i in range(20):
        memo.decode(wire.encode(Probe(i, 0.0)))
    assert len(memo._memo) <= 8
    # Probe bytes never repeat: after REVIEW of them the class is no longer kept
    for i in range(DecodeMemo.REVIEW):
        memo.decode(wire.encode(Probe(100 + i, 0.0)))
    assert memo._keep[Probe] is False
    memo._memo.clear()
    data = wire.encode(Probe(1, 0.0))
    assert memo.decode(data) is not memo.decode(data)
    assert memo.decode(wire.encode(Heartbeat(1, "n1", 0, 0))) is \
        memo.decode(wire.encode(Heartbeat(1, "n1", 0, 0)))


def test_junk_is_counted_at_every_receipt_in_a_simulation() -> None:
    sim, drivers = recorder_sim(2, seed=3)
    junk = b"\xff\x00junk"
    for _ in range(3):
        sim.at(0.1, drivers["n1"].transport.send_frame, "n2:1", junk)
    sim.at(0.2, send, drivers, "n1", "n2", Probe(1, 0.2), True)
    sim.run_until(1.0)
    assert drivers["n2"].stats.malformed == 3
    got: list[Any] = [m for _t, _s, m, _st in sim.app("n2").received]
    assert got == [Probe(1, 0.2)]
