"""Scenario files: a TOML story of faults for ``clusterfunk simulate --scenario``.

::

    [simulation]            # any simulate option, by its long name (dashes or underscores)
    protocol = "raft"
    nodes = 5
    seed = 7
    duration = 120
    loss = 0.01
    nemesis = "crash,partition"

    [[events]]
    at = 10.0
    action = "partition"    # partition oneway heal crash restart pause resume skew link
    groups = [["n1", "n2"], ["n3", "n4", "n5"]]

    [[events]]
    at = 30.0
    action = "oneway"
    from = ["n1"]
    to = ["n2", "n3"]

    [[events]]
    at = 40.0
    action = "crash"
    target = "n3"

    [[events]]
    at = 50.0
    action = "link"         # latency_ms jitter_ms loss duplicate reorder stream_reset
                            # reorder_window_ms
    loss = 0.2

    [[events]]
    at = 60.0
    action = "skew"
    target = "n2"
    offset = 0.5            # seconds added to the node's clock
    drift = 0.01            # relative rate error

    [[events]]
    at = 70.0
    action = "disk"         # one disk fault, as --nemesis disk makes them
    target = "n4"
    kind = "torn_write"     # fsync_error torn_write corrupt
    until = 80.0            # when it ends (the node restarts if it stopped and its
                            # store recovers); without it the fault never ends

    [[events]]
    at = 90.0
    action = "slow"         # every link to and from the target, as --nemesis slow
    target = "n2"
    latency = 0.15          # one-way latency of those links, seconds
    jitter = 0.075          # mean exponential extra delay, seconds (default 0)
    until = 95.0            # when its links follow the default link again (default:
                            # never)

    [[events]]
    at = 100.0
    action = "stall"        # the target's outgoing stream frames are held back until
    target = "n3"           # `until`, then delivered in order, as --nemesis stall
    until = 102.5
"""

from __future__ import annotations

import random
import tomllib
from typing import Any

import attrs

from clusterfunk.sim.nemesis import DISK_FAULTS, start_disk_fault, start_slow
from clusterfunk.sim.simulation import Simulation

ACTIONS = ("partition", "oneway", "heal", "crash", "restart", "pause", "resume", "skew", "link",
           "disk", "slow", "stall")


class ScenarioError(ValueError):
    """A scenario file that cannot be used (with the reason)."""


@attrs.frozen
class Event:
    at: float
    action: str
    args: dict[str, Any]


@attrs.frozen
class Scenario:
    options: dict[str, Any]
    events: tuple[Event, ...]


def load(path: str) -> Scenario:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid TOML: {exc}") from None
    return parse(data)


def parse(data: dict[str, Any]) -> Scenario:
    unknown = set(data) - {"simulation", "events"}
    if unknown:
        raise ScenarioError(f"unknown scenario section(s): {', '.join(sorted(unknown))}")
    options = {k.replace("-", "_"): v for k, v in data.get("simulation", {}).items()}
    events = []
    for i, raw in enumerate(data.get("events", [])):
        if not isinstance(raw, dict):
            raise ScenarioError(f"event #{i + 1} is not a table")
        raw = dict(raw)
        at = raw.pop("at", None)
        action = raw.pop("action", None)
        if not isinstance(at, int | float) or isinstance(at, bool) or at < 0:
            raise ScenarioError(f"event #{i + 1}: 'at' must be a non-negative number of seconds")
        if action not in ACTIONS:
            raise ScenarioError(f"event #{i + 1}: action must be one of {', '.join(ACTIONS)}")
        events.append(Event(float(at), action, raw))
    events.sort(key=lambda e: e.at)  # stable: equal times keep file order
    return Scenario(options, tuple(events))


def schedule(sim: Simulation, events: tuple[Event, ...] | list[Event]) -> None:
    """Schedule scenario events on a simulation (validating names now, not later)."""
    refused: list[tuple[float, str, str]] = []  # disk: stores that refused to start
    disk_rng = sim.rng("scenario-disk")  # disk: picks the record a corrupt fault damages
    for i, ev in enumerate(events):
        a = ev.args
        try:
            if ev.action == "partition":
                groups = a["groups"]
                _check_names(sim, [n for g in groups for n in g])
                sim.at(ev.at, sim.partition, [list(g) for g in groups])
            elif ev.action == "oneway":
                src, dst = list(a["from"]), list(a["to"])
                _check_names(sim, src + dst)
                sim.at(ev.at, sim.partition_oneway, src, dst)
            elif ev.action == "heal":
                sim.at(ev.at, sim.heal)
            elif ev.action in ("crash", "restart", "pause", "resume"):
                target = a["target"]
                _check_names(sim, [target])
                sim.at(ev.at, getattr(sim, ev.action), target)
            elif ev.action == "skew":
                target = a["target"]
                _check_names(sim, [target])
                sim.at(
                    ev.at,
                    sim.set_skew,
                    target,
                    float(a.get("offset", 0.0)),
                    float(a.get("drift", 0.0)),
                )
            elif ev.action == "link":
                sim.at(ev.at, _set_link, sim, dict(a))
            elif ev.action == "disk":
                target, kind = a["target"], str(a["kind"])
                _check_names(sim, [target])
                if kind not in DISK_FAULTS:
                    raise ScenarioError(f"event #{i + 1} (disk): kind {kind!r} is not one of "
                                        f"{', '.join(DISK_FAULTS)}")
                until = float(a["until"]) if "until" in a else None
                sim.at(ev.at, _disk, sim, target, kind, until, disk_rng, refused)
            elif ev.action == "slow":
                target = a["target"]
                _check_names(sim, [target])
                latency = float(a["latency"])
                jitter = float(a.get("jitter", 0.0))
                if latency < 0 or jitter < 0:
                    raise ScenarioError(f"event #{i + 1} (slow): latency and jitter must be "
                                        ">= 0")
                until = float(a["until"]) if "until" in a else None
                sim.at(ev.at, _slow, sim, target, latency, jitter, until)
            elif ev.action == "stall":
                target = a["target"]
                _check_names(sim, [target])
                until = float(a["until"])
                if until < ev.at:
                    raise ScenarioError(f"event #{i + 1} (stall): 'until' is before 'at'")
                sim.at(ev.at, sim.stall, target, until)
        except KeyError as exc:
            raise ScenarioError(f"event #{i + 1} ({ev.action}) needs {exc.args[0]!r}") from None


def _disk(sim: Simulation, target: str, kind: str, until: float | None, rng: random.Random,
          refused: list[tuple[float, str, str]]) -> None:
    _done, end = start_disk_fault(sim, target, kind, rng=rng, targets=sim.names,
                                  refused=refused)
    if until is not None:
        sim.at(max(until, sim.now), end)


def _slow(sim: Simulation, target: str, latency: float, jitter: float,
          until: float | None) -> None:
    end = start_slow(sim, target, latency, jitter)
    if until is not None:
        sim.at(max(until, sim.now), end)


def _set_link(sim: Simulation, a: dict[str, Any]) -> None:
    changes: dict[str, float] = {}
    if "latency_ms" in a:
        changes["latency"] = float(a["latency_ms"]) / 1000
    if "jitter_ms" in a:
        changes["jitter"] = float(a["jitter_ms"]) / 1000
    if "reorder_window_ms" in a:
        changes["reorder_window"] = float(a["reorder_window_ms"]) / 1000
    for k in ("loss", "duplicate", "reorder", "stream_reset"):
        if k in a:
            changes[k] = float(a[k])
    sim.set_default_link(attrs.evolve(sim.link, **changes))


def _check_names(sim: Simulation, names: list[str]) -> None:
    for n in names:
        if n not in sim.hosts:
            raise ScenarioError(f"unknown node {n!r} (nodes are {sim.names[0]}..{sim.names[-1]})")
