"""Small cores for simulator tests."""

from __future__ import annotations

import math
from typing import Any

import attrs

from clusterfunk import wire
from clusterfunk.runtime.api import Output
from clusterfunk.sim.simulation import SimHost, Simulation


@wire.message(10)
@attrs.frozen
class Probe:
    seq: int
    sent: float


class Recorder:
    """A core that records what it receives and sends what it is told to."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, Any, bool]] = []
        self.ticks: list[float] = []
        self.wake_at = math.inf
        self._out = Output()
        self.started_at: float | None = None

    def start(self, now: float) -> None:
        self.started_at = now

    def on_message(self, now: float, src: str, msg: Any, stream: bool) -> None:
        self.received.append((now, src, msg, stream))

    def on_tick(self, now: float) -> None:
        self.ticks.append(now)
        self.wake_at = math.inf

    def next_deadline(self) -> float:
        return self.wake_at

    def drain(self) -> Output | None:
        out, self._out = self._out, Output()
        return out if out else None

    # test helpers (called through driver.call)
    def send(self, dest: str, msg: Any, stream: bool = False) -> None:
        self._out.send(dest, msg, stream)


def recorder_sim(n: int = 3, **kw: Any) -> tuple[Simulation, dict[str, Any]]:
    sim = Simulation(**kw)
    drivers: dict[str, Any] = {}

    def factory(host: SimHost) -> Recorder:
        core = Recorder()
        drivers[host.name] = host.driver(core, 1)
        return core

    for i in range(1, n + 1):
        sim.add_node(f"n{i}", factory)
    sim.start()
    return sim, drivers


def send(drivers: dict[str, Any], src: str, dst: str, msg: Any, stream: bool = False) -> None:
    drivers[src].call(lambda core, now: core.send(f"{dst}:1", msg, stream))
