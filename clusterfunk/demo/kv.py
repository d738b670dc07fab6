"""The demo sharded service: a counter per integer key, its state handed over.

:class:`CounterService` implements :class:`~clusterfunk.routing.api.ShardService`
(synchronous, deterministic, no I/O): the same object runs in ``cluster-node --app
demo``, in ``clusterfunk demo`` and, unchanged, on every node of ``clusterfunk
simulate --protocol cluster --app demo``.

Requests (the payload of ``request(key, payload)``) are msgpack arrays:

* ``["incr"]`` or ``["incr", d]``: add ``d`` (default 1) to the key's counter;
  reply: the new value;
* ``["get"]``: reply: the value (0 for a key never written);
* ``["put", v]``: set the value to ``v``; reply: the previous value.

Replies are one msgpack integer. Values are signed 64-bit: an ``incr`` or ``put``
that would leave that range is refused with :class:`ServiceError`, as is any
malformed payload (outcome ``error``); the store is unchanged by a refused request.

Shard state: :meth:`CounterService.release` removes the shards it loses and returns
one blob per shard that has keys (msgpack ``[[key, value], ...]``, sorted by key);
:meth:`CounterService.acquire` loads the blobs handed over by the previous owners.
A blob is state from another node, so it is checked like any input: a malformed one
is dropped and counted (``bad_state``), and that shard starts empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from clusterfunk.routing.api import ServiceError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Largest request payload accepted (bytes); an ``incr``/``get``/``put`` needs < 20.
MAX_PAYLOAD = 64
#: Largest number of keys one handed-over shard blob may hold.
MAX_KEYS_PER_SHARD = 1_000_000

OPS = ("incr", "get", "put")


def _int64(v: Any) -> bool:
    return type(v) is int and INT64_MIN <= v <= INT64_MAX


def encode_op(op: str, arg: int | None = None) -> bytes:
    """The payload of one request (client side): ``encode_op("incr")``,
    ``encode_op("put", 5)``, ``encode_op("get")``."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")
    if op == "put" and arg is None:
        raise ValueError("put needs a value")
    if op == "get" and arg is not None:
        raise ValueError("get takes no argument")
    if arg is not None and not _int64(arg):
        raise ValueError("the argument must be a signed 64-bit int")
    return msgpack.packb([op] if arg is None else [op, arg])


def incr(delta: int = 1) -> bytes:
    """Payload: add ``delta`` to the key's counter (reply: the new value)."""
    return encode_op("incr", None if delta == 1 else delta)


def get() -> bytes:
    """Payload: read the key's counter (reply: its value, 0 if never written)."""
    return encode_op("get")


def put(value: int) -> bytes:
    """Payload: set the key's counter (reply: the previous value)."""
    return encode_op("put", value)


def decode_reply(reply: bytes) -> int:
    """The integer a reply carries (client side); ``ValueError`` if it is not one."""
    try:
        v = msgpack.unpackb(reply)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise ValueError(f"malformed reply: {exc}") from None
    if not _int64(v):
        raise ValueError(f"malformed reply: {v!r} is not an int64")
    return int(v)


def decode_op(payload: bytes) -> tuple[str, int | None]:
    """Parse a request payload; :class:`ServiceError` if malformed."""
    if len(payload) > MAX_PAYLOAD:
        raise ServiceError(f"payload of {len(payload)} bytes (max {MAX_PAYLOAD})")
    try:
        msg = msgpack.unpackb(payload, max_array_len=2, max_str_len=8, max_bin_len=0,
                              max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise ServiceError(f"malformed payload: {type(exc).__name__}") from None
    if not isinstance(msg, list) or not msg or msg[0] not in OPS:
        raise ServiceError("payload must be [op] or [op, int] with op incr, get or put")
    op: str = msg[0]
    arg = msg[1] if len(msg) == 2 else None
    if arg is not None and not _int64(arg):
        raise ServiceError("the argument must be a signed 64-bit int")
    if op == "put" and arg is None:
        raise ServiceError("put needs a value")
    if op == "get" and arg is not None:
        raise ServiceError("get takes no argument")
    return op, arg


def encode_shard(items: Mapping[int, int]) -> bytes:
    """One shard's state blob: msgpack ``[[key, value], ...]`` sorted by key."""
    return msgpack.packb([[k, items[k]] for k in sorted(items)])


def decode_shard(blob: bytes) -> dict[int, int]:
    """Parse a shard's state blob; ``ValueError`` if malformed."""
    try:
        rows = msgpack.unpackb(blob, max_array_len=MAX_KEYS_PER_SHARD, max_str_len=0,
                               max_bin_len=0, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise ValueError(f"malformed shard state: {type(exc).__name__}") from None
    if not isinstance(rows, list):
        raise ValueError("shard state must be a list of [key, value]")
    out: dict[int, int] = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and _int64(row[0]) and _int64(row[1])):
            raise ValueError("shard state rows must be [int64 key, int64 value]")
        if row[0] in out:
            raise ValueError(f"shard state repeats key {row[0]}")
        out[row[0]] = row[1]
    return out


class CounterService:
    """A counter per integer key, sharded (module docstring). Implements
    :class:`~clusterfunk.routing.api.ShardService`.

    ``shard_of`` (optional) maps a key to its shard; when given, :meth:`handle`
    refuses a key that does not belong to the shard it is called for.
    """

    def __init__(self, shard_of: Any = None) -> None:
        self.shard_of = shard_of
        #: shard -> key -> value, for the shards served now
        self.data: dict[int, dict[int, int]] = {}
        self.handled = 0  # requests answered (ok)
        self.refused = 0  # requests refused with ServiceError
        self.bad_state = 0  # handed-over blobs dropped as malformed

    # -- ShardService ------------------------------------------------------------

    def handle(self, shard: int, key: int, payload: bytes) -> bytes:
        try:
            if shard not in self.data:
                raise ServiceError(f"shard {shard} is not served here")
            if self.shard_of is not None and self.shard_of(key) != shard:
                raise ServiceError(f"key {key} is not in shard {shard}")
            op, arg = decode_op(payload)
            store = self.data[shard]
            old = store.get(key, 0)
            if op == "get":
                result = old
            elif op == "incr":
                new = old + (1 if arg is None else arg)
                if not _int64(new):
                    raise ServiceError("counter overflow")
                store[key] = new
                result = new
            else:
                assert arg is not None
                store[key] = arg
                result = old
        except ServiceError:
            self.refused += 1
            raise
        self.handled += 1
        return msgpack.packb(result)

    def release(self, shards: frozenset[int]) -> Mapping[int, bytes]:
        out: dict[int, bytes] = {}
        for s in sorted(shards):
            items = self.data.pop(s, None)
            if items:
                out[s] = encode_shard(items)
        return out

    def acquire(self, shards: frozenset[int], state: Mapping[int, bytes]) -> None:
        for s in sorted(shards):
            blob = state.get(s)
            items: dict[int, int] = {}
            if blob is not None:
                try:
                    items = decode_shard(blob)
                except ValueError:
                    self.bad_state += 1
                    items = {}
            self.data[s] = items

    # -- introspection -----------------------------------------------------------

    def served(self) -> frozenset[int]:
        """The shards this service holds now."""
        return frozenset(self.data)

    def value(self, shard: int, key: int) -> int | None:
        """The counter of ``key`` if ``shard`` is held here (0 if never written)."""
        items = self.data.get(shard)
        return None if items is None else items.get(key, 0)
