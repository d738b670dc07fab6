"""Key -> shard functions.

Invariants
----------
* The result is always in ``range(n_shards)``, also for negative integer keys.
* The result depends only on the key and the shard count: it is the same in every
  process, on every platform and every Python build (no ``hash()``, which is salted
  per process for ``str`` and ``bytes``).

Integer keys
    ``key % n_shards``. Python's ``%`` takes the sign of the divisor, so negative keys map
    into ``range(n_shards)`` too (the Go original returned negative shards for negative
    keys).

String and bytes keys
    ``zlib.crc32(data) % n_shards`` where ``data`` is the key itself for bytes-like keys
    and ``key.encode("utf-8")`` for ``str`` keys. CRC-32 here is the IEEE 802.3 /
    zlib polynomial (0x04C11DB7, reflected, init and final xor 0xFFFFFFFF), the same
    checksum as ``binascii.crc32``, gzip, PNG and Go's ``hash/crc32.ChecksumIEEE``.

    Why not Go's CRC-64 (ISO polynomial)? CRC-64 is not in the Python standard library
    and a pure-Python CRC-64 costs microseconds per key; ``zlib.crc32`` is implemented
    in C (hardware-assisted in recent zlib builds) and keeps a string key under 100 ns.
    Shard numbers therefore differ from the Go original for the same string key; both
    are stable. CRC-32 spreads keys well for shard counts far below 2**32 (the modulo
    bias is below n / 2**32). ``hashlib.blake2b(digest_size=8)`` was measured too: it
    is several times slower per call because of object construction.

The ``make_*`` helpers return closures over a fixed shard count: these are the
cheapest calls available in CPython (no argument validation, no global look-ups), and
:class:`~clusterfunk.sharding.shardmap.ShardMap` exposes them as
``shard_map.shard_for_int`` and ``shard_map.shard_for_key``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from zlib import crc32

__all__ = [
    "key_hash",
    "make_int_sharder",
    "make_key_sharder",
    "shard_for_int",
    "shard_for_key",
]

KeyLike = str | bytes | bytearray | memoryview


def _check_count(n_shards: int) -> int:
    if isinstance(n_shards, bool):
        raise TypeError("shard count must be an int, not bool")
    n = operator.index(n_shards)
    if n <= 0:
        raise ValueError(f"shard count must be positive, got {n}")
    return n


def key_hash(key: KeyLike) -> int:
    """Stable 32-bit hash of a str (UTF-8 encoded) or bytes-like key: ``zlib.crc32``.

    Raises ``TypeError`` for other types and ``UnicodeEncodeError`` (a ``ValueError``)
    for strings that are not encodable as UTF-8 (lone surrogates).
    """
    if isinstance(key, str):
        return crc32(key.encode("utf-8"))
    if isinstance(key, bytes | bytearray | memoryview):
        return crc32(key)
    raise TypeError(f"key must be str or bytes-like, not {type(key).__name__}")


def shard_for_int(key: int, n_shards: int) -> int:
    """Shard of an integer key: ``key % n_shards``, always in ``range(n_shards)``."""
    if isinstance(key, bool):
        raise TypeError("integer key must be an int, not bool")
    return operator.index(key) % _check_count(n_shards)


def shard_for_key(key: KeyLike, n_shards: int) -> int:
    """Shard of a str or bytes key: ``key_hash(key) % n_shards`` (see module docstring)."""
    return key_hash(key) % _check_count(n_shards)


def make_int_sharder(n_shards: int) -> Callable[[int], int]:
    """Return ``f(key) -> key % n_shards``, the fastest integer key -> shard call.

    The closure does not validate ``key``: an ``int`` (or bool) gives the documented
    result; a float would give a float, so pass ints.
    """
    n = _check_count(n_shards)

    def shard_for_int(key: int, _n: int = n) -> int:
        return key % _n

    return shard_for_int


def make_key_sharder(n_shards: int) -> Callable[[KeyLike], int]:
    """Return ``f(key) -> shard`` for str and bytes keys, equal to :func:`shard_for_key`.

    Exact ``str`` and ``bytes`` take a fast path; other types go through
    :func:`shard_for_key` (so bad types still raise ``TypeError``).
    """
    n = _check_count(n_shards)

    def shard_for_key(
        key: KeyLike, _n: int = n, _crc: Callable[..., int] = crc32, _str: type = str
    ) -> int:
        if key.__class__ is _str:
            return _crc(key.encode()) % _n  # type: ignore[union-attr]
        if key.__class__ is bytes:
            return _crc(key) % _n
        return key_hash(key) % _n

    return shard_for_key
