"""Validation and normalisation of shard weights.

A weight list is normalised to one of three *kinds* (the encoding stores the kind):

* ``UNIFORM`` (0): every weight is the int 1 (``ShardMap(10_000)``); weights are not
  stored, loads are shard counts.
* ``INT`` (1): every weight is an ``int`` in ``1 .. MAX_INT_WEIGHT``; loads are exact
  integer sums.
* ``FLOAT`` (2): at least one weight is a float (or another real number); every weight
  is converted to a finite, positive ``float``. Loads are computed with ``math.fsum``
  per node, which is exactly rounded and therefore independent of summation order.

Rejected with a clear message: ``bool`` (``TypeError``: True is not a weight),
non-numbers such as ``str`` or ``None`` (``TypeError``), zero, negative, NaN and
infinite weights (``ValueError``), and an empty weight list (``ValueError``).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

__all__ = ["FLOAT", "INT", "MAX_INT_WEIGHT", "MAX_SHARDS", "UNIFORM", "Weights", "normalize"]

UNIFORM = 0
INT = 1
FLOAT = 2

#: Largest number of shards a map may have (also enforced by the decoder).
MAX_SHARDS = 1 << 24
#: Largest integer weight (stored as a signed 64-bit integer).
MAX_INT_WEIGHT = (1 << 63) - 1


class Weights:
    """Normalised weights: ``kind``, ``n``, ``values`` (None when uniform), totals.

    ``values`` is a tuple of ints (kind INT) or floats (kind FLOAT); ``total``, ``minw``
    and ``maxw`` are the sum, minimum and maximum weight.
    """

    __slots__ = ("_encoded", "kind", "maxw", "minw", "n", "total", "values")

    def __init__(
        self, kind: int, n: int, values: tuple[int, ...] | tuple[float, ...] | None
    ) -> None:
        self.kind = kind
        self.n = n
        self.values = values
        self._encoded: bytes | None = None  # cache for the codec
        if values is None:
            self.total: int | float = n
            self.minw: int | float = 1
            self.maxw: int | float = 1
        else:
            self.total = math.fsum(values) if kind == FLOAT else sum(values)
            self.minw = min(values)
            self.maxw = max(values)

    def weight(self, shard: int) -> int | float:
        """Weight of one shard."""
        if self.values is None:
            if not 0 <= shard < self.n:
                raise IndexError(f"shard {shard} out of range(0, {self.n})")
            return 1
        return self.values[shard]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Weights):
            return NotImplemented
        return (self.kind, self.n, self.values) == (other.kind, other.n, other.values)

    def __hash__(self) -> int:
        return hash((self.kind, self.n, self.values))


def _check_count(n: int) -> int:
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"number of shards must be in 1..{MAX_SHARDS}, got {n}")
    return n


def normalize(weights: Sequence[int | float] | int) -> Weights:
    """Validate ``weights`` (a shard count, or one weight per shard) and normalise them."""
    if isinstance(weights, bool):
        raise TypeError("weights must be a shard count or a sequence of weights, not bool")
    if isinstance(weights, int):
        return Weights(UNIFORM, _check_count(weights), None)
    if isinstance(weights, str | bytes | bytearray) or not isinstance(weights, Sequence):
        raise TypeError(
            "weights must be a shard count (int) or a sequence of numbers, "
            f"not {type(weights).__name__}"
        )
    n = _check_count(len(weights))
    ints: list[int] = []
    all_int = True
    for i, w in enumerate(weights):
        if isinstance(w, bool):
            raise TypeError(f"weight of shard {i} is a bool ({w!r}); use a positive number")
        if isinstance(w, int):
            if w <= 0:
                raise ValueError(f"weight of shard {i} must be positive, got {w}")
            if w > MAX_INT_WEIGHT:
                raise ValueError(f"weight of shard {i} exceeds {MAX_INT_WEIGHT}")
            ints.append(w)
            continue
        all_int = False
        break
    if all_int:
        if all(w == 1 for w in ints):
            return Weights(UNIFORM, n, None)
        return Weights(INT, n, tuple(ints))
    floats: list[float] = []
    for i, w in enumerate(weights):
        if isinstance(w, bool):
            raise TypeError(f"weight of shard {i} is a bool ({w!r}); use a positive number")
        if isinstance(w, float | numbers.Real):
            f = float(w)
        elif hasattr(type(w), "__index__"):
            f = float(operator.index(w))
        else:
            raise TypeError(f"weight of shard {i} must be a number, not {type(w).__name__}")
        if math.isnan(f) or math.isinf(f):
            raise ValueError(f"weight of shard {i} must be finite, got {f}")
        if f <= 0.0:
            raise ValueError(f"weight of shard {i} must be positive, got {w!r}")
        floats.append(f)
    return Weights(FLOAT, n, tuple(floats))
