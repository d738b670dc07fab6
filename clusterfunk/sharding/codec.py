"""Binary encoding of a :class:`~clusterfunk.sharding.shardmap.ShardMap` for the Raft log.

Format, version 1 (all integers little-endian)::

    offset  size        field
    0       4           magic b"CFSM"
    4       1           version (1)
    5       1           weight kind: 0 all weights 1, 1 int64 weights, 2 float64 weights
    6       1           owner width: 0 no nodes, 1 one byte per shard, 2 two bytes per shard
    7       1           reserved, 0
    8       4           number of shards n (1 .. MAX_SHARDS)
    12      4           number of nodes k (0 .. 65535)
    16      ...         k node entries, sorted by node id, strictly ascending:
                          worker id (u16, <= 65534), id length L (u8, 1..255), L bytes UTF-8
    ...     0/8n        weights (kind 1: n x int64 >= 1, not all 1; kind 2: n x float64,
                          finite and > 0; kind 0: absent)
    ...     0/n/2n      owner worker id per shard (width 1 if every worker id < 255,
                          else width 2; absent when there are no nodes)
    end-4   4           CRC-32 (zlib) of every byte before it

The encoding is canonical: one map has exactly one encoding (node order, owner width and
weight kind are functions of the map), so ``encode(decode(b)) == b`` and the same
history gives byte-identical encodings in every process.

Decoding checks the size against the header before allocating anything large and
rejects every malformed input (truncated, oversized, bad magic/version/checksum,
unknown worker ids, unsorted or duplicate nodes, invalid weights, trailing bytes) with
:class:`ShardMapDecodeError`, a ``ValueError``.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from zlib import crc32

from clusterfunk.sharding.shardmap import MAX_WORKER_ID, ShardMap
from clusterfunk.sharding.weights import FLOAT, INT, MAX_SHARDS, UNIFORM, Weights

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_ENCODED_SIZE", "ShardMapDecodeError"]

MAGIC = b"CFSM"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBBBII")
_NODE = struct.Struct("<HB")
_CRC = struct.Struct("<I")
_BIG = sys.byteorder == "big"
_MAX_NODES = MAX_WORKER_ID + 1
#: No valid encoding is larger than this.
MAX_ENCODED_SIZE = _HEADER.size + _MAX_NODES * (_NODE.size + 255) + MAX_SHARDS * (8 + 2) + _CRC.size

assert array("H").itemsize == 2 and array("q").itemsize == 8 and array("d").itemsize == 8


class ShardMapDecodeError(ValueError):
    """The bytes are not a valid encoded shard map (truncated, corrupt or oversized)."""


def _le(a: array[int]) -> bytes:
    if _BIG:  # pragma: no cover - little-endian hosts only in CI
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _weights_bytes(w: Weights) -> bytes:
    cached = w._encoded
    if cached is None:
        if w.kind == UNIFORM:
            cached = b""
        elif w.kind == INT:
            cached = _le(array("q", w.values))  # type: ignore[arg-type]
        else:
            cached = _le(array("d", w.values))  # type: ignore[arg-type]
        w._encoded = cached  # weights are immutable: encode them once
    return cached


def encode_map(m: ShardMap) -> bytes:
    """Encode ``m`` (see the module docstring for the format)."""
    w = m._w
    nodes = m._nodes
    workers = m._workers
    wids = m._wids
    if not nodes:
        width = 0
        owner_bytes = b""
    elif isinstance(wids, bytearray):
        width = 1
        owner_bytes = bytes(wids)
    else:
        width = 2
        owner_bytes = _le(wids)
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION, w.kind, width, 0, w.n, len(nodes))]
    pack = _NODE.pack
    for node in nodes:
        raw = node.encode("utf-8")
        parts.append(pack(workers[node], len(raw)))
        parts.append(raw)
    parts.append(_weights_bytes(w))
    parts.append(owner_bytes)
    body = b"".join(parts)
    return body + _CRC.pack(crc32(body))


def _fail(msg: str) -> ShardMapDecodeError:
    return ShardMapDecodeError(f"invalid shard map encoding: {msg}")


def decode_map(data: bytes | bytearray | memoryview) -> ShardMap:
    """Decode bytes made by :func:`encode_map`; :class:`ShardMapDecodeError` if invalid."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    if size > MAX_ENCODED_SIZE:
        raise _fail(f"{size} bytes is larger than any valid map ({MAX_ENCODED_SIZE})")
    if not isinstance(data, bytes):
        data = bytes(data)
    if size < _HEADER.size + _CRC.size:
        raise _fail(f"truncated: {size} bytes is shorter than the header")
    magic, version, kind, width, reserved, n, k = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _fail(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise _fail(f"unsupported version {version}")
    if crc32(data[:-4]) != _CRC.unpack_from(data, size - 4)[0]:
        raise _fail("checksum mismatch (corrupt or truncated data)")
    if reserved != 0:
        raise _fail("reserved byte is not zero")
    if kind not in (UNIFORM, INT, FLOAT):
        raise _fail(f"unknown weight kind {kind}")
    if width not in (0, 1, 2):
        raise _fail(f"unknown owner width {width}")
    if not 1 <= n <= MAX_SHARDS:
        raise _fail(f"shard count {n} out of range 1..{MAX_SHARDS}")
    if k > _MAX_NODES:
        raise _fail(f"node count {k} out of range 0..{_MAX_NODES}")
    end = size - _CRC.size
    tail = (0 if kind == UNIFORM else 8 * n) + width * n
    pos = _HEADER.size
    if pos + k * (_NODE.size + 1) + tail > end:
        raise _fail("truncated: sizes in the header exceed the data")

    # Node table.
    nodes: list[str] = []
    workers: dict[str, int] = {}
    max_wid = -1
    unpack = _NODE.unpack_from
    prev = ""
    for _ in range(k):
        if pos + _NODE.size > end:
            raise _fail("truncated node table")
        wid, length = unpack(data, pos)
        pos += _NODE.size
        if length == 0 or pos + length > end:
            raise _fail("bad node id length")
        try:
            node = data[pos : pos + length].decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("node id is not valid UTF-8") from None
        pos += length
        if nodes and node <= prev:
            raise _fail("node ids not strictly ascending")
        if wid > MAX_WORKER_ID:
            raise _fail(f"worker id {wid} out of range")
        nodes.append(node)
        workers[node] = wid
        prev = node
        if wid > max_wid:
            max_wid = wid
    if len(set(workers.values())) != k:
        raise _fail("duplicate worker ids")
    if pos + tail != end:
        raise _fail(f"size mismatch: {end - pos - tail:+d} bytes after the node table")
    expected_width = 0 if k == 0 else (1 if max_wid < 0xFF else 2)
    if width != expected_width:
        raise _fail(f"owner width {width} does not match the node table")

    # Weights.
    if kind == UNIFORM:
        w = Weights(UNIFORM, n, None)
    else:
        a = array("q" if kind == INT else "d")
        a.frombytes(data[pos : pos + 8 * n])
        if _BIG:  # pragma: no cover
            a.byteswap()
        pos += 8 * n
        if kind == INT:
            if min(a) < 1:
                raise _fail("integer weight below 1")
            if max(a) == 1:
                raise _fail("integer weights all 1 must use weight kind 0")
        elif not all(map(math.isfinite, a)) or not min(a) > 0.0:
            raise _fail("float weights must be finite and positive")
        w = Weights(kind, n, tuple(a))

    # Owners.
    owners: list[str | None]
    if width == 0:
        owners = [None] * n
        wids: bytearray | array[int] = bytearray(b"\xff" * n)
    else:
        table: list[str | None] = [None] * (256 if width == 1 else max_wid + 1)
        for node, wid in workers.items():
            table[wid] = node
        if width == 1:
            raw = data[pos : pos + n]
            # Deleting every valid worker id must leave nothing (a C-speed check).
            if raw.translate(None, bytes(sorted(workers.values()))):
                raise _fail("owner worker id not in the node table")
            owners = [table[b] for b in raw]
            wids = bytearray(raw)
        else:
            wids = array("H")
            wids.frombytes(data[pos : pos + 2 * n])
            if _BIG:  # pragma: no cover
                wids.byteswap()
            try:
                owners = [table[x] for x in wids]
            except IndexError:
                raise _fail("owner worker id not in the node table") from None
            if None in owners:
                raise _fail("owner worker id not in the node table")
    return ShardMap._from_parts(w, owners, wids, tuple(nodes), workers, None)
