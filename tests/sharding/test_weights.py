"""Weight validation: clear errors for anything but positive finite numbers."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from clusterfunk.sharding import ShardMap
from clusterfunk.sharding.weights import FLOAT, INT, MAX_SHARDS, UNIFORM, normalize


@pytest.mark.parametrize(
    ("weights", "exc", "words"),
    [
        ([1, 0, 1], ValueError, "shard 1 must be positive"),
        ([1, -2], ValueError, "positive"),
        ([1.0, -0.5], ValueError, "positive"),
        ([0.0], ValueError, "positive"),
        ([1, math.nan], ValueError, "finite"),
        ([math.inf], ValueError, "finite"),
        ([1, True], TypeError, "bool"),
        ([1.5, False], TypeError, "bool"),
        ([1, "2"], TypeError, "number"),
        ([None], TypeError, "number"),
        ([], ValueError, "number of shards"),
        (0, ValueError, "number of shards"),
        (-5, ValueError, "number of shards"),
        (MAX_SHARDS + 1, ValueError, "number of shards"),
        (True, TypeError, "bool"),
        ("abc", TypeError, "sequence"),
        (2.5, TypeError, "sequence"),
        ([1 << 63], ValueError, "exceeds"),
    ],
)
def test_rejected(weights: object, exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        ShardMap(weights)  # type: ignore[arg-type]


def test_kinds() -> None:
    assert normalize(5).kind == UNIFORM
    assert normalize([1, 1, 1]).kind == UNIFORM
    w = normalize([1, 2, 3])
    assert (w.kind, w.total, w.minw, w.maxw) == (INT, 6, 1, 3)
    f = normalize([1, 2.5, Fraction(1, 2)])
    assert f.kind == FLOAT
    assert f.values == (1.0, 2.5, 0.5)
    assert f.total == 4.0
    assert ShardMap([2, 3]).total_weight == 5
    assert ShardMap([2, 3]).weight(1) == 3
    assert ShardMap(3).weight(2) == 1
    with pytest.raises(IndexError):
        ShardMap(3).weight(3)
