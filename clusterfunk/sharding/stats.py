"""Measurements of a shard map: balance and spread (used by tests, benchmark and CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterfunk.sharding.shardmap import ShardMap

__all__ = ["longest_run", "spread_stats"]


def longest_run(owners: Sequence[object]) -> int:
    """Length of the longest run of consecutive shards with the same owner (0 if empty).

    Runs are not cyclic: shard n-1 and shard 0 are not neighbours.
    """
    best = 0
    run = 0
    prev = object()
    for o in owners:
        if o == prev:
            run += 1
        else:
            run = 1
            prev = o
        if run > best:
            best = run
    return best


def spread_stats(m: ShardMap) -> dict[str, float | int]:
    """Balance and spread figures of ``m``.

    ``max_load``/``min_load``: extreme node loads; ``fair``: total weight / nodes;
    ``max_deviation``: the largest ``|load - fair|``; ``max_weight``: the tolerance;
    ``longest_run``: see :func:`longest_run`.
    """
    loads = m.loads()
    if not loads:
        return {"nodes": 0, "longest_run": 0}
    fair = m.total_weight / len(loads)
    return {
        "nodes": len(loads),
        "max_load": max(loads.values()),
        "min_load": min(loads.values()),
        "fair": fair,
        "max_deviation": max(abs(v - fair) for v in loads.values()),
        "max_weight": m.max_weight,
        "longest_run": longest_run(m.owners()),
    }
