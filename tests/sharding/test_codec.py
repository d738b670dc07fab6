"""Encoding: exact round trip, canonical bytes, one error type for every bad input."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.sharding import ShardMap, ShardMapDecodeError
from clusterfunk.sharding.codec import MAX_ENCODED_SIZE

from .strategies import histories, node_sets, weights


def build(w: object, history: list[frozenset[str]]) -> ShardMap:
    m = ShardMap(w)  # type: ignore[arg-type]
    for nodes in history:
        m, _ = m.update(nodes)
    return m


def reseal(body: bytes) -> bytes:
    """Recompute the checksum, to reach the checks behind it."""
    return body + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=200, deadline=None)
@given(weights, histories, node_sets)
def test_round_trip_and_identical_future(w: object, history, nxt) -> None:
    m = build(w, history)
    blob = m.encode()
    back = ShardMap.decode(blob)
    assert back == m
    assert back.owners() == m.owners()
    assert back.worker_ids() == m.worker_ids()
    assert back.loads() == m.loads()
    assert back.encode() == blob  # canonical
    assert ShardMap.decode(bytearray(blob)) == m
    assert ShardMap.decode(memoryview(blob)) == m
    # The decoded map evolves exactly like the original.
    m2, r1 = m.update(nxt)
    b2, r2 = back.update(nxt)
    assert r1 == r2
    assert b2.encode() == m2.encode()


def test_compact() -> None:
    m = ShardMap.build(10_000, [f"node-{i:03d}" for i in range(50)])
    blob = m.encode()
    assert len(blob) < 10_000 + 50 * 12 + 64  # one byte per shard, weights omitted


def test_wide_worker_ids_round_trip() -> None:
    nodes = [f"n{i:04d}" for i in range(300)]
    m = ShardMap.build(1000, nodes)
    assert max(m.worker_ids().values()) == 299
    blob = m.encode()
    assert blob[6] == 2  # two bytes per owner
    back = ShardMap.decode(blob)
    assert back == m
    # Back to one byte per owner when the large ids leave.
    small, _ = back.update(nodes[:10])
    assert small.encode()[6] == 1
    assert ShardMap.decode(small.encode()) == small


valid_maps = st.builds(build, weights, histories)


@settings(max_examples=150, deadline=None)
@given(valid_maps, st.data())
def test_bit_flips_and_truncations_are_rejected(m: ShardMap, data) -> None:
    blob = m.encode()
    bit = data.draw(st.integers(min_value=0, max_value=len(blob) * 8 - 1))
    flipped = bytearray(blob)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ShardMapDecodeError):
        ShardMap.decode(bytes(flipped))
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    with pytest.raises(ShardMapDecodeError):
        ShardMap.decode(blob[:cut])
    with pytest.raises(ShardMapDecodeError):
        ShardMap.decode(blob + b"\0")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_the_decode_error(raw: bytes) -> None:
    for candidate in (raw, b"CFSM\x01" + raw, reseal(b"CFSM\x01" + raw)):
        try:
            m = ShardMap.decode(candidate)
        except ShardMapDecodeError:
            continue
        assert m.encode() == candidate  # anything accepted is canonical


@settings(max_examples=200, deadline=None)
@given(valid_maps, st.data())
def test_resealed_corruption_is_rejected_or_canonical(m: ShardMap, data) -> None:
    """Corruption with a valid checksum still never gives a non-canonical map."""
    body = bytearray(m.encode()[:-4])
    i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[i] = data.draw(st.integers(min_value=0, max_value=255))
    blob = reseal(bytes(body))
    try:
        back = ShardMap.decode(blob)
    except ShardMapDecodeError:
        return
    assert back.encode() == blob
    for node in back.nodes:
        assert all(back.lookup(s) == node for s in back.shards_of(node))


def crafted(
    *,
    n: int = 4,
    kind: int = 0,
    width: int = 1,
    k: int = 1,
    nodes: bytes = b"\x00\x00\x01a",
    tail: bytes = b"\x00\x00\x00\x00",
    magic: bytes = b"CFSM",
    version: int = 1,
    res: int = 0,
) -> bytes:
    head = struct.pack("<4sBBBBII", magic, version, kind, width, res, n, k)
    return reseal(head + nodes + tail)


def test_crafted_valid() -> None:
    m = ShardMap.decode(crafted())
    assert m.owners() == ("a", "a", "a", "a") and m.worker_id("a") == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"magic": b"XXXX"}, "magic"),
        ({"version": 2}, "version"),
        ({"res": 1}, "reserved"),
        ({"kind": 3}, "weight kind"),
        ({"width": 3}, "owner width"),
        ({"n": 0, "tail": b""}, "shard count"),
        ({"n": 1 << 30}, "shard count|exceed"),
        ({"k": 70_000}, "node count"),
        ({"k": 1000}, "exceed"),
        ({"tail": b"\x00\x00\x00"}, "size mismatch|exceed"),
        ({"tail": b"\x00\x00\x00\x01"}, "not in the node table"),
        ({"tail": b"\x00\x00\x00\xff"}, "not in the node table"),
        ({"width": 2, "tail": b"\x00" * 8}, "width"),
        ({"nodes": b"\x00\x00\x00", "tail": bytes(5)}, "length"),
        ({"nodes": b"\xff\xff\x01a"}, "worker id"),
        ({"nodes": b"\x00\x00\x01\xff"}, "UTF-8"),
        ({"k": 2, "nodes": b"\x00\x00\x01b\x01\x00\x01a"}, "ascending"),
        ({"k": 2, "nodes": b"\x00\x00\x01a\x01\x00\x01a"}, "ascending"),
        ({"k": 2, "nodes": b"\x00\x00\x01a\x00\x00\x01b"}, "duplicate"),
        ({"k": 0, "nodes": b"", "width": 0, "tail": b""}, None),
        ({"k": 0, "nodes": b"", "width": 1}, "width"),
        ({"kind": 1, "tail": struct.pack("<4q", 1, 1, 1, 1) + bytes(4)}, "kind 0"),
        ({"kind": 1, "tail": struct.pack("<4q", 1, 0, 2, 1) + bytes(4)}, "below 1"),
        ({"kind": 2, "tail": struct.pack("<4d", 1, 0.0, 2, 1) + bytes(4)}, "positive"),
        ({"kind": 2, "tail": struct.pack("<4d", 1, float("nan"), 2, 1) + bytes(4)}, "finite"),
    ],
)
def test_crafted_invalid(kwargs: dict, words: str | None) -> None:
    blob = crafted(**kwargs)
    if words is None:  # control: a valid map without nodes
        assert ShardMap.decode(blob).nodes == ()
        return
    with pytest.raises(ShardMapDecodeError, match=words):
        ShardMap.decode(blob)


def test_oversized_and_wrong_type() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_ENCODED_SIZE + 1

    with pytest.raises(ShardMapDecodeError, match="larger"):
        ShardMap.decode(Huge(b"CFSM"))
    with pytest.raises(ShardMapDecodeError, match="truncated"):
        ShardMap.decode(b"")
    with pytest.raises(TypeError):
        ShardMap.decode("CFSM")  # type: ignore[arg-type]
    assert issubclass(ShardMapDecodeError, ValueError)


def test_decode_shares_one_object_per_bytes_and_keeps_only_a_few():
    from clusterfunk.sharding import shardmap as sm

    maps = [ShardMap.build(100, [f"n{i}" for i in range(1, k + 2)]) for k in range(12)]
    data = [m.encode() for m in maps]
    first = ShardMap.decode(data[0])
    assert ShardMap.decode(bytes(bytearray(data[0]))) is first  # equal bytes, one object
    assert first == maps[0]
    assert ShardMap.decode(bytearray(data[0])) is not first  # not bytes: decoded afresh
    for d, m in zip(data, maps, strict=True):
        assert ShardMap.decode(d) == m
    assert len(sm._decoded) == sm.DECODED_KEPT
    assert ShardMap.decode(data[0]) is not first  # pushed out by the later ones
    bad = data[1][:-1] + bytes([data[1][-1] ^ 1])
    for _ in range(2):  # a failure is not kept
        with pytest.raises(ShardMapDecodeError):
            ShardMap.decode(bad)
