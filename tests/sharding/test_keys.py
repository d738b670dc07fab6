"""Key -> shard functions: range, stability, fast closures equal the checked functions."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.sharding import (
    ShardMap,
    key_hash,
    make_int_sharder,
    make_key_sharder,
    shard_for_int,
    shard_for_key,
)

counts = st.integers(min_value=1, max_value=1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(1 << 80), max_value=1 << 80), counts)
def test_int_key_in_range_and_matches_closure(key: int, n: int) -> None:
    s = shard_for_int(key, n)
    assert 0 <= s < n
    assert s == make_int_sharder(n)(key)
    assert (key - s) % n == 0


def test_negative_int_keys_are_not_negative() -> None:
    assert shard_for_int(-1, 10) == 9
    assert shard_for_int(-10, 10) == 0
    assert shard_for_int(-11, 10) == 9
    assert ShardMap(7).shard_for_int(-3) == 4


@settings(max_examples=300, deadline=None)
@given(st.text(), counts)
def test_str_key_is_crc32_of_utf8(key: str, n: int) -> None:
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(ValueError):
            shard_for_key(key, n)
        return
    expected = zlib.crc32(raw) % n
    assert shard_for_key(key, n) == expected
    assert shard_for_key(raw, n) == expected
    assert shard_for_key(bytearray(raw), n) == expected
    assert shard_for_key(memoryview(raw), n) == expected
    fast = make_key_sharder(n)
    assert fast(key) == fast(raw) == fast(bytearray(raw)) == expected


def test_known_vectors() -> None:
    # Hard-coded so a change of hash function or encoding cannot slip through.
    assert key_hash(b"") == 0
    assert key_hash("hello") == 0x3610A686
    assert key_hash(b"123456789") == 0xCBF43926  # the CRC-32/IEEE check value
    assert key_hash("ノード") == zlib.crc32("ノード".encode())
    assert shard_for_key("hello", 10_000) == 0x3610A686 % 10_000 == 870


def test_str_subclass_and_bad_types() -> None:
    class S(str):
        pass

    assert make_key_sharder(100)(S("hello")) == shard_for_key("hello", 100)
    for bad in (1, 1.5, None, ["x"]):
        with pytest.raises(TypeError):
            shard_for_key(bad, 10)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            make_key_sharder(10)(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        shard_for_int(True, 10)
    with pytest.raises(TypeError):
        shard_for_int(1.0, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, -1])
def test_bad_shard_counts(n: int) -> None:
    with pytest.raises(ValueError):
        shard_for_int(1, n)
    with pytest.raises(ValueError):
        shard_for_key("x", n)
    with pytest.raises(ValueError):
        make_int_sharder(n)
    with pytest.raises(TypeError):
        shard_for_int(1, True)


def test_string_keys_spread_evenly() -> None:
    n = 64
    hits = [0] * n
    for i in range(64_000):
        hits[shard_for_key(f"user-{i}", n)] += 1
    assert min(hits) > 800 and max(hits) < 1200


def test_package_doctest() -> None:
    import doctest

    import clusterfunk.sharding as pkg

    result = doctest.testmod(pkg)
    assert result.attempted > 0 and result.failed == 0
