"""Weighted sharding: the shard map the Raft leader commits, and key -> shard functions.

Pure Python (no Trio). See ``docs/sharding.md`` for the design and benchmark figures.

>>> from clusterfunk.sharding import ShardMap
>>> m, report = ShardMap(12).update(["a", "b", "c"])
>>> m.lookup(0), m.shards_of("b"), m.worker_id("c")
('a', (1, 4, 7, 10), 2)
>>> m2, report = m.update(["a", "b", "c", "d"])
>>> report.moved, report.joined
(3, ('d',))
>>> ShardMap.decode(m2.encode()) == m2
True
"""

from clusterfunk.sharding.codec import ShardMapDecodeError
from clusterfunk.sharding.keys import (
    key_hash,
    make_int_sharder,
    make_key_sharder,
    shard_for_int,
    shard_for_key,
)
from clusterfunk.sharding.shardmap import MoveReport, ShardMap, diff
from clusterfunk.sharding.stats import longest_run, spread_stats
from clusterfunk.sharding.weights import Weights

__all__ = [
    "MoveReport",
    "ShardMap",
    "ShardMapDecodeError",
    "Weights",
    "diff",
    "key_hash",
    "longest_run",
    "make_int_sharder",
    "make_key_sharder",
    "shard_for_int",
    "shard_for_key",
    "spread_stats",
]
