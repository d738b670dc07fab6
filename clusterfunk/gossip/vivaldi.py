"""Vivaldi network coordinates (Dabek et al. 2004), with Serf's refinements.

Each node keeps a coordinate: a Euclidean vector (8 dimensions), a ``height``
(the node's access-link delay, added to every distance), an ``error`` estimate,
and an ``adjustment`` (mean residual of recent samples, a non-Euclidean
correction). A probe RTT towards a member whose coordinate came with the ack
moves our coordinate like a spring. Distances are seconds.

Serf's constants are used: error max 1.5, ce = cc = 0.25, adjustment window 20,
minimum height 10 us, a median filter over the last 3 samples per peer, gravity
rho 150 pulling coordinates back toward the origin so they do not drift.
"""

from __future__ import annotations

import math
import random

from clusterfunk.gossip.messages import Coord

DIMENSIONS = 8
ERROR_MAX = 1.5
CE = 0.25
CC = 0.25
ADJUSTMENT_WINDOW = 20
HEIGHT_MIN = 10e-6
LATENCY_FILTER = 3
GRAVITY_RHO = 150.0
ZERO = 1e-6
#: Samples beyond this are refused (seconds); a real RTT this long is a bug.
MAX_RTT = 10.0


def origin(dimensions: int = DIMENSIONS) -> Coord:
    """The starting coordinate: at the origin, minimum height, maximal error."""
    return Coord((0.0,) * dimensions, ERROR_MAX, 0.0, HEIGHT_MIN)


def is_valid(c: Coord, dimensions: int = DIMENSIONS) -> bool:
    """A coordinate from the network is usable: right dimension, all finite."""
    if len(c.vec) != dimensions:
        return False
    isfinite = math.isfinite
    for v in c.vec:
        if not isfinite(v):
            return False
    return (isfinite(c.error) and isfinite(c.adjustment) and isfinite(c.height)
            and c.error >= 0 and c.height >= 0)


def raw_distance(a: Coord, b: Coord) -> float:
    """Euclidean distance plus both heights (seconds)."""
    s = 0.0
    for x, y in zip(a.vec, b.vec, strict=True):
        d = x - y
        s += d * d
    return math.sqrt(s) + a.height + b.height


def distance(a: Coord, b: Coord) -> float:
    """Rule (Serf DistanceTo): the raw distance corrected by both adjustments, unless
    that would make it non-positive. This is the RTT estimate."""
    dist = raw_distance(a, b)
    adjusted = dist + a.adjustment + b.adjustment
    return adjusted if adjusted > 0.0 else dist


def _sum_sq(values: list[float] | tuple[float, ...]) -> float:
    """The sum of squares, added left to right (as ``sum`` does, without a generator)."""
    s = 0.0
    for v in values:
        s += v * v
    return s


def _apply_force(c: Coord, force: float, other: Coord, rng: random.Random) -> Coord:
    """Move ``c`` by ``force`` along the unit vector from ``other`` to ``c``; the
    height takes its share of the force (Serf ApplyForce)."""
    diff = [x - y for x, y in zip(c.vec, other.vec, strict=True)]
    mag = math.sqrt(_sum_sq(diff))
    if mag > ZERO:
        unit = [d / mag for d in diff]
    else:  # coincident: push in a random direction
        unit = [rng.random() - 0.5 for _ in diff]
        norm = math.sqrt(_sum_sq(unit)) or 1.0
        unit = [u / norm for u in unit]
        mag = 0.0
    vec = tuple([x + u * force for x, u in zip(c.vec, unit, strict=True)])
    height = c.height
    if mag > ZERO:
        height = max((c.height + other.height) * force / mag + c.height, HEIGHT_MIN)
    return Coord(vec, c.error, c.adjustment, height)


class VivaldiClient:
    """This node's coordinate, updated from RTT samples towards other members."""

    def __init__(self, rng: random.Random, dimensions: int = DIMENSIONS) -> None:
        self.rng = rng
        self.dimensions = dimensions
        self.coord = origin(dimensions)
        self._samples: dict[str, list[float]] = {}
        self._adjust: list[float] = [0.0] * ADJUSTMENT_WINDOW
        self._adjust_i = 0
        self.updates = 0
        self.rejected = 0

    def forget(self, node: str) -> None:
        self._samples.pop(node, None)

    def _filtered(self, node: str, rtt: float) -> float:
        """Rule (Serf latency filter): the median of the last LATENCY_FILTER samples."""
        s = self._samples.setdefault(node, [])
        s.append(rtt)
        if len(s) > LATENCY_FILTER:
            del s[0]
        return sorted(s)[len(s) // 2]

    def update(self, node: str, other: Coord, rtt: float) -> Coord | None:
        """Rule (Vivaldi spring update): one RTT sample (seconds) towards ``node`` at
        ``other`` moves our coordinate; returns it, or None for an unusable sample."""
        if not (0.0 <= rtt <= MAX_RTT) or not is_valid(other, self.dimensions):
            self.rejected += 1
            return None
        rtt = self._filtered(node, rtt)
        c = self.coord
        # spring step
        dist = distance(c, other)
        rtt_s = max(rtt, ZERO)
        wrongness = abs(dist - rtt_s) / rtt_s
        total_err = max(c.error + other.error, ZERO)
        weight = c.error / total_err
        error = min(CE * weight * wrongness + c.error * (1.0 - CE * weight), ERROR_MAX)
        force = CC * weight * (rtt_s - dist)
        c = _apply_force(Coord(c.vec, error, c.adjustment, c.height), force, other, self.rng)
        # adjustment term: mean residual over a window (halved, as both ends add theirs)
        self._adjust[self._adjust_i] = rtt_s - raw_distance(c, other)
        self._adjust_i = (self._adjust_i + 1) % ADJUSTMENT_WINDOW
        adjustment = sum(self._adjust) / (2.0 * ADJUSTMENT_WINDOW)
        c = Coord(c.vec, c.error, adjustment, c.height)
        # gravity toward the origin keeps the whole system from drifting away
        o = Coord((0.0,) * self.dimensions, 0.0, 0.0, 0.0)
        dist_o = math.sqrt(_sum_sq(c.vec))
        c = _apply_force(c, -1.0 * (dist_o / GRAVITY_RHO) ** 2, o, self.rng)
        if not is_valid(c, self.dimensions):  # numerical trouble: start over
            c = origin(self.dimensions)
        self.coord = c
        self.updates += 1
        return c
