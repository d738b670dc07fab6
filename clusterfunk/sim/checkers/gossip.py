"""Trace analysis for gossip runs: pure functions over trace records.

Inputs are the records of a run in trace order (``t``, ``node``, ``ev`` and
fields, see ``docs/trace.md``): ``gossip.member`` (``member``, ``status``,
``incarnation``; a node's view of a member changed) and the simulator's faults
(``sim.crash``, ``sim.restart``, ``sim.pause``, ``sim.resume``, ``sim.partition``,
``sim.heal``). Nothing here reads clocks or sockets; the same functions serve the
simulation workload, the tests and the benchmarks.

Definitions (used by the workload's violations and the benchmarks):

* **detection time** of a crash of ``x`` at ``t0`` at survivor ``s``: the first
  ``gossip.member`` record at ``s`` with ``member == x`` and ``status == "dead"``
  at ``t >= t0``, minus ``t0`` (0 if ``s`` already held ``x`` dead). Survivors are
  the nodes up (alive, not paused) at ``t0``.
* **false positive**: a ``dead`` declaration about ``x`` at ``t`` by anyone while
  ``x`` was up and undisturbed: not crashed or paused since ``t - grace`` and no
  partition active since ``t - grace`` (so a verdict still in flight from an
  earlier fault is not blamed on the protocol).
* **convergence time** after ``sim.heal`` at ``t0``: the first ``t >= t0`` at which
  every up node holds every other up node ``alive``; ``None`` if a new fault
  (partition, pause) interrupts first or it never happens.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

Record = dict[str, Any]

DEAD = "dead"
ALIVE = "alive"


@attrs.frozen
class Crash:
    """One crash and when each survivor declared the crashed member dead."""

    target: str
    t: float
    #: survivor -> seconds from the crash to its ``dead`` verdict (None: never).
    delays: dict[str, float | None]
    #: True if the target restarted before every survivor had decided.
    restarted: bool = False

    @property
    def complete(self) -> bool:
        return all(d is not None for d in self.delays.values())

    @property
    def all_dead_after(self) -> float | None:
        """Seconds until *every* survivor declared the target dead (None if some never did)."""
        if not self.delays or not self.complete:
            return None
        return max(d for d in self.delays.values() if d is not None)


def _name(member: str) -> str:
    """Member names in traces are node names; tolerate ``host:port`` forms."""
    return member.partition(":")[0] if ":" in member else member


class DetectionTracker:
    """Online form of :func:`detection`: :meth:`feed` records in order, then :meth:`result`."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self.paused: set[str] = set()
        self.dead_views: set[tuple[str, str]] = set()  # (observer, member) held dead
        self.crashes: list[tuple[str, float, dict[str, float | None], list[bool]]] = []

    def feed(self, r: Record) -> None:
        ev = r["ev"]
        if ev == "gossip.member":
            s, x, status = r["node"], _name(r["member"]), r["status"]
            if status == DEAD:
                self.dead_views.add((s, x))
                for target, t0, waiting, _ in self.crashes:
                    if target == x and s in waiting and waiting[s] is None:
                        waiting[s] = round(r["t"] - t0, 6)
            elif self.dead_views:
                self.dead_views.discard((s, x))
        elif ev == "sim.start":
            for n in r["nodes"]:
                self.up[n] = True
        elif ev == "sim.add":
            self.up[r["target"]] = True
        elif ev == "sim.crash":
            x, t0 = r["target"], r["t"]
            self.up[x] = False
            self._forget(x)
            for target, _, pending, _ in self.crashes:
                # A survivor that crashes before deciding is no longer a survivor.
                if target != x and x in pending and pending[x] is None:
                    del pending[x]
            survivors = [n for n, u in self.up.items() if u and n != x and n not in self.paused]
            delays: dict[str, float | None] = {
                s: (0.0 if (s, x) in self.dead_views else None) for s in survivors
            }
            self.crashes.append((x, t0, delays, [False]))
        elif ev == "sim.restart":
            x = r["target"]
            self.up[x] = True
            self._forget(x)
            for target, _, delays, flag in self.crashes:
                if target == x and any(d is None for d in delays.values()):
                    flag[0] = True
        elif ev == "sim.pause":
            self.paused.add(r["target"])
        elif ev == "sim.resume":
            self.paused.discard(r["target"])

    def _forget(self, observer: str) -> None:
        # A (re)started node starts with an empty view.
        self.dead_views = {p for p in self.dead_views if p[0] != observer}

    def result(self) -> list[Crash]:
        return [Crash(x, t0, dict(sorted(d.items())), f[0]) for x, t0, d, f in self.crashes]


def detection(records: Iterable[Record]) -> list[Crash]:
    """Per crash, each survivor's detection delay (see the module docstring)."""
    tracker = DetectionTracker()
    for r in records:
        tracker.feed(r)
    return tracker.result()


def detection_summary(crashes: Sequence[Crash]) -> dict[str, Any]:
    """Median and max detection delay over every (crash, survivor) pair that decided,
    plus median and max of the time until all survivors decided."""
    per_survivor = [d for c in crashes for d in c.delays.values() if d is not None]
    all_dead = [c.all_dead_after for c in crashes if c.all_dead_after is not None]
    undecided = sum(1 for c in crashes for d in c.delays.values() if d is None)
    return {
        "crashes": len(crashes),
        "detection_median_s": _r(statistics.median(per_survivor)) if per_survivor else None,
        "detection_max_s": _r(max(per_survivor)) if per_survivor else None,
        "all_survivors_median_s": _r(statistics.median(all_dead)) if all_dead else None,
        "all_survivors_max_s": _r(max(all_dead)) if all_dead else None,
        "undecided": undecided,
    }


class FalsePositiveTracker:
    """Online form of :func:`false_positives`; offending records collect in :attr:`found`."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.up: dict[str, bool] = {}
        self.disturbed_until: dict[str, float] = {}  # member -> end of its excuse window
        self.paused: set[str] = set()
        self.partition_active = False
        self.partition_excuse_until = -1.0
        self.found: list[Record] = []

    def feed(self, r: Record) -> None:
        ev = r["ev"]
        t = r["t"]
        if ev == "gossip.member":
            if r["status"] != DEAD:
                return
            x = _name(r["member"])
            if not self.up.get(x, False) or x in self.paused or self.partition_active:
                return
            if t <= self.disturbed_until.get(x, -1.0) or t <= self.partition_excuse_until:
                return
            self.found.append(r)
        elif ev == "sim.start":
            for n in r["nodes"]:
                self.up[n] = True
        elif ev == "sim.add":
            self.up[r["target"]] = True
        elif ev == "sim.crash":
            self.up[r["target"]] = False
        elif ev == "sim.restart":
            self.up[r["target"]] = True
            self.disturbed_until[r["target"]] = t + self.grace
        elif ev == "sim.pause":
            self.paused.add(r["target"])
        elif ev == "sim.resume":
            self.paused.discard(r["target"])
            self.disturbed_until[r["target"]] = t + self.grace
        elif ev == "sim.partition":
            self.partition_active = True
        elif ev == "sim.heal":
            self.partition_active = False
            self.partition_excuse_until = t + self.grace


def false_positives(records: Iterable[Record], grace: float) -> list[Record]:
    """``dead`` declarations about members that were up and undisturbed (see above).

    Returns the offending ``gossip.member`` records.
    """
    tracker = FalsePositiveTracker(grace)
    for r in records:
        tracker.feed(r)
    return tracker.found


class ConvergenceTracker:
    """Online form of :func:`convergence_after_heals`; call :meth:`result` at the end."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self.paused: set[str] = set()
        self.alive: dict[str, set[str]] = {}  # observer -> members it holds alive
        self.results: list[float | None] = []
        self.pending: float | None = None  # time of the heal we are waiting on
        self.bad: set[tuple[str, str]] = set()  # (observer, member) pairs not yet alive

    def _live(self, n: str) -> bool:
        return self.up.get(n, False) and n not in self.paused

    def _recompute(self) -> None:
        self.bad.clear()
        nodes = [n for n in self.up if self._live(n)]
        for s in nodes:
            vs = self.alive.get(s, set())
            for x in nodes:
                if x != s and x not in vs:
                    self.bad.add((s, x))

    def _settle(self, t: float) -> None:
        if self.pending is not None and not self.bad:
            self.results.append(round(t - self.pending, 6))
            self.pending = None

    def feed(self, r: Record) -> None:
        ev = r["ev"]
        if ev == "gossip.member":  # (the bulk: a mass join of n members makes n^2)
            s, x = r["node"], _name(r["member"])
            vs = self.alive.get(s)
            if vs is None:
                vs = self.alive[s] = set()
            if r["status"] == ALIVE:
                vs.add(x)
                if self.pending is not None:
                    self.bad.discard((s, x))
                    self._settle(r["t"])
            else:
                vs.discard(x)
                if self.pending is not None and s != x and self._live(s) and self._live(x):
                    self.bad.add((s, x))
            return
        t = r["t"]
        if ev == "sim.start":
            for n in r["nodes"]:
                self.up[n] = True
        elif ev in ("sim.add", "sim.restart", "sim.crash", "sim.pause", "sim.resume"):
            target = r["target"]
            if ev in ("sim.add", "sim.restart"):
                self.up[target] = True
                self.alive.pop(target, None)
            elif ev == "sim.crash":
                self.up[target] = False
                self.alive.pop(target, None)
            elif ev == "sim.pause":
                self.paused.add(target)
            else:
                self.paused.discard(target)
            if self.pending is not None:
                self._recompute()
                self._settle(t)
        elif ev == "sim.partition":
            if self.pending is not None:
                self.results.append(None)  # interrupted before converging
                self.pending = None
        elif ev == "sim.heal":
            if self.pending is not None:
                self.results.append(None)
            self.pending = t
            self._recompute()
            self._settle(t)

    def result(self) -> list[float | None]:
        return [*self.results, *([None] if self.pending is not None else [])]


def convergence_after_heals(records: Iterable[Record]) -> list[float | None]:
    """For every ``sim.heal``: seconds until all up nodes see each other alive."""
    tracker = ConvergenceTracker()
    for r in records:
        tracker.feed(r)
    return tracker.result()


def load(
    stats: Iterable[Any], members: int, duration: float
) -> dict[str, float | None]:
    """Packets and bytes sent per member per second from driver stats
    (:class:`clusterfunk.runtime.driver.DriverStats`, datagrams and frames)."""
    if members <= 0 or duration <= 0:
        return {"packets_per_member_s": None, "bytes_per_member_s": None}
    packets = 0
    nbytes = 0
    for s in stats:
        packets += s.datagrams_out + s.frames_out
        nbytes += s.bytes_out
    scale = members * duration
    return {
        "packets_per_member_s": round(packets / scale, 3),
        "bytes_per_member_s": round(nbytes / scale, 1),
    }


def _r(x: float) -> float:
    return round(x, 3)
