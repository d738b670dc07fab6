"""The weighted shard map: which node owns each shard, and how that changes.

A :class:`ShardMap` is immutable. ``new_map, report = old_map.update(nodes)`` computes
the map for a new node set from the old map (the *history* matters, which is what makes
minimal movement possible).

Invariants (checked by the property tests in ``tests/sharding``)
-----------------------------------------------------------------
* Every shard ``0..n-1`` has exactly one owner when the node set is non-empty, and no
  owner when it is empty.
* **Balance**: for maps produced by :meth:`ShardMap.update`,
  ``max(load) - min(load) <= max shard weight`` over the nodes, hence every node is
  within one maximum shard weight of its fair share ``total weight / nodes``. With all
  weights 1 every node holds ``floor(n/k)`` or ``ceil(n/k)`` shards.
* **Minimal movement**: an update moves exactly the shards of the nodes that left plus
  shards taken by nodes that joined. On a pure leave only the leavers' shards move; on a
  pure join only shards that move to the newcomers move.
* **Determinism**: the result depends only on the weights and the sequence of node
  sets; never on ``hash()`` (salted per process), set or dict iteration order, or any
  global random state. Every tie is broken by node id (``str`` order).
* **Worker ids**: each node keeps its worker id for as long as it stays in the map; ids
  are unique; a joiner gets the smallest id not held by a remaining node (ids freed by
  leavers are reused smallest-first).

The algorithm
-------------
1. *Orphans* (shards of nodes that left, or every shard of a map without nodes) are
   handed out in ascending shard order, each to the node with the smallest load (ties:
   smallest node id). Joiners start at load 0 and so absorb orphans first. Consecutive
   orphans go to different nodes, which keeps runs of consecutive shards short; from an
   empty map with equal weights this is a round robin over the sorted node ids.
2. *Top-up of joiners*: while the most loaded remaining node ``d`` (ties: smallest id)
   and the least loaded joiner ``r`` (ties: smallest id) differ by more than the weight
   of some shard of ``d``, ``r`` takes such a shard from ``d``. The shard is the first
   eligible shard of ``d`` at or after (cyclically) a position on a golden-ratio walk
   over the shard ids, ``(crc32(r) + t * 0.618 n) mod n`` for the ``t``-th shard taken
   by ``r``. The walk is a low-discrepancy sequence, so the newcomer's shards are spread
   evenly over the id space (the deterministic replacement of the Go original's random
   picks), and the newcomer takes only what balance needs: the rounding remainder stays
   with the nodes that already had it, ordered by load then id.

Both phases have fast paths for equal weights that produce exactly the result of the
general loop (tested); the general loop uses heaps.

Representation
--------------
``_owners`` is a flat ``list`` of node ids indexed by shard (lookups are one list index);
``_wids`` holds the owner's worker id per shard as a ``bytearray`` while every worker id
is below 255 (255 = unassigned), else as ``array('H')`` (65535 = unassigned). It is what
the encoder writes and what ``bytearray.find`` scans to find a node's shards.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, cast
from zlib import crc32

import attrs

from clusterfunk.sharding.keys import make_int_sharder, make_key_sharder
from clusterfunk.sharding.weights import FLOAT, INT, UNIFORM, Weights, normalize

if TYPE_CHECKING:
    from clusterfunk.sharding.keys import KeyLike

__all__ = ["MAX_NODE_ID_BYTES", "MAX_WORKER_ID", "MoveReport", "ShardMap", "diff"]

#: Largest worker id (65535 is the "unassigned" marker in the owner array).
MAX_WORKER_ID = 0xFFFE
#: Longest node id, in UTF-8 bytes.
MAX_NODE_ID_BYTES = 255

_SMALL_NONE = 0xFF
_WIDE_NONE = 0xFFFF

Load = int | float


@attrs.frozen
class MoveReport:
    """What one :meth:`ShardMap.update` changed.

    ``moved`` counts shards whose owner changed (including shards of a map without
    nodes that got their first owner); ``shards`` lists them in ascending order;
    ``weight_moved`` is their total weight; ``joined`` and ``left`` are the sorted node
    ids that joined and left.
    """

    joined: tuple[str, ...]
    left: tuple[str, ...]
    moved: int
    shards: tuple[int, ...]
    weight_moved: Load


def _validate_nodes(nodes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(nodes, str | bytes):
        raise TypeError("nodes must be an iterable of node id strings, not a single string")
    out = set()
    for node in nodes:
        if node.__class__ is not str:
            if not isinstance(node, str):
                raise TypeError(f"node ids must be str, got {type(node).__name__}")
            node = str(node)
        out.add(node)
    result = tuple(sorted(out))
    for node in result:
        if not node:
            raise ValueError("node ids must not be empty")
        try:
            size = len(node.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"node id {node!r} is not valid UTF-8 text") from exc
        if size > MAX_NODE_ID_BYTES:
            raise ValueError(f"node id {node[:20]!r}... longer than {MAX_NODE_ID_BYTES} bytes")
    if len(result) > MAX_WORKER_ID + 1:
        raise ValueError(f"at most {MAX_WORKER_ID + 1} nodes are supported")
    return result


def _golden_stride(n: int) -> int:
    return max(1, n * 61803398875 // 100000000000)


def _fill_sequence(items: list[tuple[int, str]], count: int) -> list[str]:
    """Recipients of ``count`` unit-weight shards, each to the least loaded node.

    ``items`` is a list of ``(load, node)`` sorted ascending. Equal to popping the
    minimum of a ``(load, node)`` heap ``count`` times, adding 1 each time, but runs
    level by level with list operations.
    """
    seq: list[str] = []
    if count <= 0 or not items:
        return seq
    k = len(items)
    active: list[str] = []
    i = 0
    level = items[0][0]
    while True:
        new = []
        while i < k and items[i][0] <= level:
            new.append(items[i][1])
            i += 1
        if new:
            active = sorted(active + new) if active else new
        need = count - len(seq)
        if i == k and need > len(active):
            # Everyone is level now: a plain round robin finishes the job.
            seq.extend((active * (need // len(active) + 1))[:need])
            return seq
        if need <= len(active):
            seq.extend(active[:need])
            return seq
        seq.extend(active)
        level += 1


def _ascending_levels(items: list[tuple[int, str]], cap: int) -> tuple[list[str], list[int]]:
    """Like :func:`_fill_sequence`, also returning each recipient's load before it."""
    seq: list[str] = []
    lv: list[int] = []
    k = len(items)
    active: list[str] = []
    i = 0
    level = items[0][0] if items else 0
    while len(seq) < cap and items:
        new = []
        while i < k and items[i][0] <= level:
            new.append(items[i][1])
            i += 1
        if new:
            active = sorted(active + new) if active else new
        seq.extend(active)
        lv.extend([level] * len(active))
        level += 1
    return seq, lv


def _descending_levels(items: list[tuple[int, str]], cap: int) -> tuple[list[str], list[int]]:
    """Donors of unit-weight shards, each time the most loaded (ties: smallest id).

    ``items`` is ``(-load, node)`` sorted ascending. Returns the donor sequence and each
    donor's load before giving, down to load 1 or ``cap`` entries.
    """
    seq: list[str] = []
    lv: list[int] = []
    k = len(items)
    active: list[str] = []
    i = 0
    level = -items[0][0] if items else 0
    while len(seq) < cap and level > 0:
        new = []
        while i < k and -items[i][0] >= level:
            new.append(items[i][1])
            i += 1
        if new:
            active = sorted(active + new) if active else new
        seq.extend(active)
        lv.extend([level] * len(active))
        level -= 1
    return seq, lv


#: How many decoded maps :meth:`ShardMap.decode` keeps, by their bytes.
DECODED_KEPT = 8
_decoded: dict[bytes, ShardMap] = {}


class ShardMap:
    """Immutable weighted shard map (see the module docstring for the invariants).

    ``ShardMap(weights)`` makes a map without nodes; ``weights`` is a shard count (every
    weight 1) or one positive weight per shard. ``update(nodes)`` returns the next map
    and a :class:`MoveReport`.

    Fast calls (attributes, bound at construction; no argument checks):

    * ``lookup(shard) -> node``: ``list.__getitem__`` of the owner list. Negative
      shards index from the end like a list; use :meth:`owner` for a checked lookup.
    * ``shard_for_int(key) -> shard`` and ``shard_for_key(key) -> shard``: closures
      over the shard count (see :mod:`clusterfunk.sharding.keys`).
    """

    __slots__ = (
        "_loads",
        "_nodes",
        "_owners",
        "_shards",
        "_w",
        "_wids",
        "_workers",
        "lookup",
        "shard_for_int",
        "shard_for_key",
    )

    lookup: Callable[[int], str | None]
    shard_for_int: Callable[[int], int]
    shard_for_key: Callable[[KeyLike], int]

    def __init__(self, weights: Sequence[int | float] | int) -> None:
        w = normalize(weights)
        self._w = w
        self._owners: list[str | None] = [None] * w.n
        self._wids: bytearray | array[int] = bytearray(b"\xff" * w.n)
        self._nodes: tuple[str, ...] = ()
        self._workers: dict[str, int] = {}
        self._loads: dict[str, Load] | None = {}
        self._shards: dict[str, tuple[int, ...]] = {}
        self.lookup = self._owners.__getitem__
        self.shard_for_int = make_int_sharder(w.n)
        self.shard_for_key = make_key_sharder(w.n)

    @classmethod
    def build(cls, weights: Sequence[int | float] | int, nodes: Iterable[str]) -> ShardMap:
        """Shorthand for ``ShardMap(weights).update(nodes)[0]``."""
        return cls(weights).update(nodes)[0]

    @classmethod
    def _from_parts(
        cls,
        w: Weights,
        owners: list[str | None],
        wids: bytearray | array[int],
        nodes: tuple[str, ...],
        workers: dict[str, int],
        loads: dict[str, Load] | None,
        template: ShardMap | None = None,
    ) -> ShardMap:
        self = object.__new__(cls)
        self._w = w
        self._owners = owners
        self._wids = wids
        self._nodes = nodes
        self._workers = workers
        self._loads = loads
        self._shards = {}
        self.lookup = owners.__getitem__
        if template is not None:
            self.shard_for_int = template.shard_for_int
            self.shard_for_key = template.shard_for_key
        else:
            self.shard_for_int = make_int_sharder(w.n)
            self.shard_for_key = make_key_sharder(w.n)
        return self

    # ------------------------------------------------------------------ queries

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return self._w.n

    def __len__(self) -> int:
        return self._w.n

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node ids in the map, sorted."""
        return self._nodes

    @property
    def weights(self) -> Weights:
        """The normalised weights (``kind``, ``values``, ``total``, ``minw``, ``maxw``)."""
        return self._w

    def weight(self, shard: int) -> Load:
        """Weight of ``shard``."""
        return self._w.weight(shard)

    @property
    def total_weight(self) -> Load:
        """Sum of all shard weights."""
        return self._w.total

    @property
    def max_weight(self) -> Load:
        """Largest shard weight (the balance tolerance)."""
        return self._w.maxw

    def owner(self, shard: int) -> str | None:
        """Owner of ``shard`` (``None`` if the map has no nodes); ``IndexError`` if out of range."""
        if shard < 0:
            raise IndexError(f"shard {shard} out of range(0, {self._w.n})")
        return self._owners[shard]

    def owners(self) -> tuple[str | None, ...]:
        """Owner of every shard, indexed by shard (a copy)."""
        return tuple(self._owners)

    def worker_id(self, node: str) -> int:
        """Persistent worker id of ``node``; ``KeyError`` if it is not in the map."""
        return self._workers[node]

    def worker_ids(self) -> dict[str, int]:
        """Worker id of every node, in node id order."""
        return {node: self._workers[node] for node in self._nodes}

    def shards_of(self, node: str) -> tuple[int, ...]:
        """Shards owned by ``node``, ascending (empty if unknown). Cached per map."""
        cached = self._shards.get(node)
        if cached is not None:
            return cached
        wid = self._workers.get(node)
        if wid is None:
            return ()
        found: list[int] = []
        append = found.append
        wids = self._wids
        if isinstance(wids, bytearray):
            find = wids.find
            i = find(wid)
            while i >= 0:
                append(i)
                i = find(wid, i + 1)
        else:
            owners = self._owners
            index = owners.index
            i = 0
            try:
                while True:
                    i = index(node, i)
                    append(i)
                    i += 1
            except ValueError:
                pass
            del owners
        result = tuple(found)
        self._shards[node] = result
        return result

    def loads(self) -> dict[str, Load]:
        """Total weight held by each node, in node id order."""
        loads = self._get_loads()
        return {node: loads[node] for node in self._nodes}

    def counts(self) -> dict[str, int]:
        """Number of shards held by each node, in node id order."""
        if self._w.kind == UNIFORM:
            return dict(self.loads())  # type: ignore[arg-type]
        return {node: len(self.shards_of(node)) for node in self._nodes}

    def _get_loads(self) -> dict[str, Load]:
        loads = self._loads
        if loads is None:
            loads = self._compute_loads()
            if self._w.kind != FLOAT:
                self._loads = loads
        return loads

    def _compute_loads(self) -> dict[str, Load]:
        """Loads from scratch, in a canonical (order independent) way."""
        w = self._w
        if not self._nodes:
            return {}
        if w.kind == UNIFORM:
            wids = self._wids
            if isinstance(wids, bytearray):
                return {node: wids.count(self._workers[node]) for node in self._nodes}
            counts = Counter(self._owners)
            return {node: counts.get(node, 0) for node in self._nodes}
        groups: dict[str, list[Load]] = {node: [] for node in self._nodes}
        for weight, node in zip(w.values, self._owners, strict=True):  # type: ignore[arg-type]
            groups[node].append(weight)  # type: ignore[index]
        if w.kind == INT:
            return {node: sum(ws) for node, ws in groups.items()}
        return {node: math.fsum(ws) for node, ws in groups.items()}

    # ------------------------------------------------------------------ equality

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShardMap):
            return NotImplemented
        return (
            self._w == other._w
            and self._nodes == other._nodes
            and self._owners == other._owners
            and self.worker_ids() == other.worker_ids()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ShardMap(n_shards={self._w.n}, nodes={len(self._nodes)})"

    # ------------------------------------------------------------------ encoding

    def encode(self) -> bytes:
        """Deterministic, versioned, checksummed bytes (see :mod:`.codec`)."""
        from clusterfunk.sharding.codec import encode_map

        return encode_map(self)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> ShardMap:
        """Inverse of :meth:`encode`; raises :class:`.ShardMapDecodeError` on bad input.

        A map is immutable, so equal ``bytes`` may share one object: the last
        :data:`DECODED_KEPT` maps decoded are kept by their bytes (every member of a
        cluster decodes the same committed maps; the simulator runs them all in one
        process)."""
        from clusterfunk.sharding.codec import decode_map

        if type(data) is not bytes:
            return decode_map(data)
        kept = _decoded
        m = kept.get(data)
        if m is None:
            m = decode_map(data)
            if len(kept) >= DECODED_KEPT:
                del kept[next(iter(kept))]  # the oldest
            kept[data] = m
        return m

    # ------------------------------------------------------------------ updating

    def update(
        self, nodes: Iterable[str], *, _generic: bool = False
    ) -> tuple[ShardMap, MoveReport]:
        """Map for the node set ``nodes``, and what moved.

        ``nodes`` is any iterable of non-empty ``str`` node ids (duplicates are
        ignored). An empty node set unassigns every shard. ``_generic`` forces the
        general (heap based) algorithm; it exists so tests can check that the fast
        paths give identical results.
        """
        new_nodes = _validate_nodes(nodes)
        old_nodes = self._nodes
        if new_nodes == old_nodes:
            return self, MoveReport((), (), 0, (), 0)
        w = self._w
        n = w.n
        new_set = set(new_nodes)
        old_set = set(old_nodes)
        leavers = [x for x in old_nodes if x not in new_set]
        joiners = [x for x in new_nodes if x not in old_set]

        workers = {x: i for x, i in self._workers.items() if x in new_set}
        used = set(workers.values())
        next_id = 0
        for j in joiners:
            while next_id in used:
                next_id += 1
            workers[j] = next_id
            next_id += 1
        max_wid = max(workers.values()) if workers else -1
        if max_wid > MAX_WORKER_ID:  # pragma: no cover - guarded by _validate_nodes
            raise ValueError("too many worker ids")

        old_loads = self._get_loads() if w.kind != FLOAT else self._compute_loads()
        loads: dict[str, Load] = {x: old_loads[x] for x in new_nodes if x in old_set}
        for j in joiners:
            loads[j] = 0

        if not new_nodes:
            owners: list[str | None] = [None] * n
            wids: bytearray | array[int] = bytearray(b"\xff" * n)
            new_map = ShardMap._from_parts(w, owners, wids, (), {}, {}, self)
            shards = tuple(range(n))
            return new_map, MoveReport((), tuple(leavers), n, shards, w.total)

        small = max_wid < _SMALL_NONE
        if not old_nodes and w.kind == UNIFORM and not _generic:
            owners, wids = _round_robin(n, new_nodes, workers, small)
            k = len(new_nodes)
            base, extra = divmod(n, k)
            loads = {x: base + (1 if i < extra else 0) for i, x in enumerate(new_nodes)}
            moved: list[int] = list(range(n))
        else:
            owners = self._owners.copy()
            wids = _convert_wids(self._wids, small)
            if old_nodes:
                orphans = sorted(chain.from_iterable(self.shards_of(x) for x in leavers))
            else:
                orphans = list(range(n))
            moved = list(orphans)
            if orphans:
                if w.kind == UNIFORM and not _generic:
                    _place_orphans_uniform(orphans, owners, wids, loads, workers)
                else:
                    _place_orphans_heap(orphans, owners, wids, loads, workers, w)
            stay = [x for x in new_nodes if x in old_set]
            if joiners and stay:
                if w.kind == UNIFORM and not _generic:
                    taken = _top_up_uniform(stay, joiners, owners, wids, loads, workers, n)
                else:
                    taken = _top_up_heap(stay, joiners, owners, wids, loads, workers, w)
                if orphans and taken:
                    # An orphan placed on a remaining node may be taken on by a joiner;
                    # it still moved once.
                    moved = sorted(set(moved).union(taken))
                else:
                    moved.extend(taken)
        moved.sort()
        if w.kind == UNIFORM:
            weight_moved: Load = len(moved)
        elif w.kind == INT:
            values = w.values
            weight_moved = sum([values[s] for s in moved])  # type: ignore[index,misc]
        else:
            values = w.values
            weight_moved = math.fsum([values[s] for s in moved])  # type: ignore[index]
            loads = None  # type: ignore[assignment]  # recomputed canonically on demand
        new_map = ShardMap._from_parts(w, owners, wids, new_nodes, workers, loads, self)
        report = MoveReport(tuple(joiners), tuple(leavers), len(moved), tuple(moved), weight_moved)
        return new_map, report


# ---------------------------------------------------------------------- helpers


def _round_robin(
    n: int, nodes: tuple[str, ...], workers: Mapping[str, int], small: bool
) -> tuple[list[str | None], bytearray | array[int]]:
    k = len(nodes)
    reps = n // k + 1
    owners = cast("list[str | None]", (list(nodes) * reps)[:n])
    ids = [workers[x] for x in nodes]
    if small:
        wids: bytearray | array[int] = bytearray((bytes(ids) * reps)[:n])
    else:
        wids = array("H", ids * reps)[:n]
    return owners, wids


def _convert_wids(wids: bytearray | array[int], small: bool) -> bytearray | array[int]:
    """Copy of the worker id array in the representation for ``small``."""
    if isinstance(wids, bytearray):
        if small:
            return bytearray(wids)
        return array("H", [_WIDE_NONE if x == _SMALL_NONE else x for x in wids])
    if not small:
        return array("H", wids)
    # Ids >= 255 belong to nodes that are leaving; their shards are reassigned next.
    return bytearray([x if x < _SMALL_NONE else _SMALL_NONE for x in wids])


def _place_orphans_uniform(
    orphans: list[int],
    owners: list[str | None],
    wids: bytearray | array[int],
    loads: dict[str, Load],
    workers: Mapping[str, int],
) -> None:
    items = sorted([(loads[x], x) for x in loads])  # type: ignore[misc]
    seq = _fill_sequence(items, len(orphans))  # type: ignore[arg-type]
    for s, r in zip(orphans, seq, strict=True):
        owners[s] = r
        wids[s] = workers[r]
    for r, c in Counter(seq).items():
        loads[r] += c


def _place_orphans_heap(
    orphans: list[int],
    owners: list[str | None],
    wids: bytearray | array[int],
    loads: dict[str, Load],
    workers: Mapping[str, int],
    w: Weights,
) -> None:
    heap = sorted([(loads[x], x) for x in loads])
    values = w.values
    replace = heapq.heapreplace
    for s in orphans:
        load, r = heap[0]
        owners[s] = r
        wids[s] = workers[r]
        load += 1 if values is None else values[s]
        replace(heap, (load, r))
    for load, r in heap:
        loads[r] = load


def _finder(
    owners: list[str | None], wids: bytearray | array[int], n: int
) -> Callable[[str, int, int], int]:
    """``find(node, wid, pos)``: first shard of ``node`` at or after ``pos``, cyclically."""
    if isinstance(wids, bytearray):
        bfind = wids.find

        def find(node: str, wid: int, pos: int) -> int:
            s = bfind(wid, pos)
            if s < 0:
                s = bfind(wid, 0, pos)
            return s

        return find
    index = owners.index

    def find_wide(node: str, wid: int, pos: int) -> int:
        try:
            return index(node, pos)
        except ValueError:
            try:
                return index(node, 0, pos)
            except ValueError:
                return -1

    return find_wide


def _top_up_uniform(
    stay: list[str],
    joiners: list[str],
    owners: list[str | None],
    wids: bytearray | array[int],
    loads: dict[str, Load],
    workers: Mapping[str, int],
    n: int,
) -> list[int]:
    """Fast path of :func:`_top_up_heap` for unit weights (identical result)."""
    ritems = sorted([(loads[x], x) for x in joiners])  # type: ignore[misc]
    ditems = sorted([(-loads[x], x) for x in stay])  # type: ignore[misc]
    top = -ditems[0][0]
    cap = sum(max(0, top - 1 - load) for load, _ in ritems)
    if cap <= 0:
        return []
    rseq, rlv = _ascending_levels(ritems, cap)  # type: ignore[arg-type]
    dseq, dlv = _descending_levels(ditems, cap)  # type: ignore[arg-type]
    limit = min(len(rseq), len(dseq))
    m = 0
    while m < limit and dlv[m] - rlv[m] > 1:
        m += 1
    find = _finder(owners, wids, n)
    stride = _golden_stride(n)
    base = {r: crc32(r.encode()) % n for r in joiners}
    taken_by: dict[str, int] = dict.fromkeys(joiners, 0)
    taken: list[int] = []
    for d, r in zip(dseq[:m], rseq[:m], strict=True):
        t = taken_by[r]
        taken_by[r] = t + 1
        s = find(d, workers[d], (base[r] + t * stride) % n)
        owners[s] = r
        wids[s] = workers[r]
        taken.append(s)
    for d, c in Counter(dseq[:m]).items():
        loads[d] -= c
    for r, c in Counter(rseq[:m]).items():
        loads[r] += c
    return taken


def _top_up_heap(
    stay: list[str],
    joiners: list[str],
    owners: list[str | None],
    wids: bytearray | array[int],
    loads: dict[str, Load],
    workers: Mapping[str, int],
    w: Weights,
) -> list[int]:
    """Joiners take shards from the most loaded remaining nodes (module docstring, step 2)."""
    n = w.n
    values = w.values
    minw = w.minw
    donors = sorted([(-loads[x], x) for x in stay])
    recv = sorted([(loads[x], x) for x in joiners])
    find = _finder(owners, wids, n)
    stride = _golden_stride(n)
    base = {r: crc32(r.encode()) % n for r in joiners}
    taken_by: dict[str, int] = dict.fromkeys(joiners, 0)
    taken: list[int] = []
    replace = heapq.heapreplace
    while True:
        neg, d = donors[0]
        lr, r = recv[0]
        gap = -neg - lr
        if gap <= minw:
            break
        t = taken_by[r]
        pos = (base[r] + t * stride) % n
        wid = workers[d]
        s = find(d, wid, pos)
        if values is not None:
            # First shard of d, cyclically from pos, light enough to narrow the gap.
            first = s
            while s >= 0 and values[s] >= gap:
                nxt = find(d, wid, (s + 1) % n)
                s = -1 if nxt == first else nxt
        if s < 0:
            break
        weight = 1 if values is None else values[s]
        taken_by[r] = t + 1
        owners[s] = r
        wids[s] = workers[r]
        taken.append(s)
        loads[d] = -neg - weight
        loads[r] = lr + weight
        replace(donors, (-(-neg - weight), d))
        replace(recv, (lr + weight, r))
    return taken


def diff(old: ShardMap, new: ShardMap) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Shards each node gained and lost from ``old`` to ``new``: ``{node: (gained, lost)}``.

    Only nodes with a change appear; node ids are sorted; shard tuples ascend. The maps
    must have the same number of shards.
    """
    if old.n_shards != new.n_shards:
        raise ValueError(f"shard counts differ: {old.n_shards} != {new.n_shards}")
    a = old._owners
    b = new._owners
    gained: dict[str, list[int]] = {}
    lost: dict[str, list[int]] = {}
    if a == b:
        return {}
    for s, (x, y) in enumerate(zip(a, b, strict=True)):
        if x is not y and x != y:
            if y is not None:
                gained.setdefault(y, []).append(s)
            if x is not None:
                lost.setdefault(x, []).append(s)
    return {
        node: (tuple(gained.get(node, ())), tuple(lost.get(node, ())))
        for node in sorted(gained.keys() | lost.keys())
    }
