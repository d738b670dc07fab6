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


def detection(records: Iterable[Record]) -> list[Crash]:
    """Per crash, each survivor's detection delay (see the module docstring)."""
    up: dict[str, bool] = {}
    paused: set[str] = set()
    view: dict[str, dict[str, str]] = {}
    open_crashes: list[tuple[str, float, dict[str, float | None], list[bool]]] = []
    done: list[Crash] = []

    for r in records:
        ev = r["ev"]
        if ev == "gossip.member":
            s, x, status = r["node"], _name(r["member"]), r["status"]
            view.setdefault(s, {})[x] = status
            if status == DEAD:
                for target, t0, delays, _ in open_crashes:
                    if target == x and s in delays and delays[s] is None:
                        delays[s] = round(r["t"] - t0, 6)
        elif ev == "sim.start":
            for n in r["nodes"]:
                up[n] = True
        elif ev == "sim.add":
            up[r["target"]] = True
        elif ev == "sim.crash":
            x, t0 = r["target"], r["t"]
            up[x] = False
            view.pop(x, None)
            for target, _, delays, _ in open_crashes:
                # A survivor that crashes before deciding is no longer a survivor.
                if target != x and delays.get(x, 0.0) is None:
                    del delays[x]
            survivors = [n for n, u in up.items() if u and n != x and n not in paused]
            delays: dict[str, float | None] = {}
            for s in survivors:
                delays[s] = 0.0 if view.get(s, {}).get(x) == DEAD else None
            open_crashes.append((x, t0, delays, [False]))
        elif ev == "sim.restart":
            x = r["target"]
            up[x] = True
            view.pop(x, None)
            for target, _, delays, flag in open_crashes:
                if target == x and not all(d is not None for d in delays.values()):
                    flag[0] = True
        elif ev == "sim.pause":
            paused.add(r["target"])
        elif ev == "sim.resume":
            paused.discard(r["target"])
    for target, t0, delays, flag in open_crashes:
        done.append(Crash(target, t0, dict(sorted(delays.items())), flag[0]))
    return done


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


def false_positives(records: Iterable[Record], grace: float) -> list[Record]:
    """``dead`` declarations about members that were up and undisturbed (see above).

    Returns the offending ``gossip.member`` records.
    """
    up: dict[str, bool] = {}
    disturbed_until: dict[str, float] = {}  # member -> end of its excuse window
    paused: set[str] = set()
    partition_active = False
    partition_excuse_until = -1.0
    found: list[Record] = []
    for r in records:
        ev = r["ev"]
        t = r["t"]
        if ev == "gossip.member":
            if r["status"] != DEAD:
                continue
            x = _name(r["member"])
            if not up.get(x, False) or x in paused or partition_active:
                continue
            if t <= disturbed_until.get(x, -1.0) or t <= partition_excuse_until:
                continue
            found.append(r)
        elif ev == "sim.start":
            for n in r["nodes"]:
                up[n] = True
        elif ev == "sim.add":
            up[r["target"]] = True
        elif ev == "sim.crash":
            up[r["target"]] = False
        elif ev == "sim.restart":
            up[r["target"]] = True
            disturbed_until[r["target"]] = t + grace
        elif ev == "sim.pause":
            paused.add(r["target"])
        elif ev == "sim.resume":
            paused.discard(r["target"])
            disturbed_until[r["target"]] = t + grace
        elif ev == "sim.partition":
            partition_active = True
        elif ev == "sim.heal":
            partition_active = False
            partition_excuse_until = t + grace
    return found


def convergence_after_heals(records: Iterable[Record]) -> list[float | None]:
    """For every ``sim.heal``: seconds until all up nodes see each other alive."""
    up: dict[str, bool] = {}
    paused: set[str] = set()
    view: dict[str, dict[str, str]] = {}
    results: list[float | None] = []
    pending: float | None = None  # time of the heal we are waiting on
    bad: set[tuple[str, str]] = set()  # (observer, member) pairs not yet alive

    def live() -> list[str]:
        return [n for n, u in up.items() if u and n not in paused]

    def recompute() -> None:
        bad.clear()
        nodes = live()
        for s in nodes:
            vs = view.get(s, {})
            for x in nodes:
                if x != s and vs.get(x) != ALIVE:
                    bad.add((s, x))

    def settle(t: float) -> None:
        nonlocal pending
        if pending is not None and not bad:
            results.append(round(t - pending, 6))
            pending = None

    for r in records:
        ev = r["ev"]
        t = r["t"]
        if ev == "gossip.member":
            s, x = r["node"], _name(r["member"])
            view.setdefault(s, {})[x] = r["status"]
            if pending is not None:
                if r["status"] == ALIVE:
                    bad.discard((s, x))
                elif up.get(s) and s not in paused and up.get(x) and x not in paused and s != x:
                    bad.add((s, x))
                settle(t)
        elif ev == "sim.start":
            for n in r["nodes"]:
                up[n] = True
        elif ev in ("sim.add", "sim.restart", "sim.crash", "sim.pause", "sim.resume"):
            target = r["target"]
            if ev in ("sim.add", "sim.restart"):
                up[target] = True
                view.pop(target, None)
            elif ev == "sim.crash":
                up[target] = False
                view.pop(target, None)
            elif ev == "sim.pause":
                paused.add(target)
            else:
                paused.discard(target)
            if pending is not None:
                recompute()
                settle(t)
        elif ev == "sim.partition":
            if pending is not None:
                results.append(None)  # interrupted before converging
                pending = None
        elif ev == "sim.heal":
            if pending is not None:
                results.append(None)
            pending = t
            recompute()
            settle(t)
    if pending is not None:
        results.append(None)
    return results


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
