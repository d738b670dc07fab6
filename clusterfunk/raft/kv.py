"""A replicated key-value store: the built-in state machine.

Commands are msgpack arrays (deterministic bytes):

* ``["get", key]`` -> the value or ``None``
* ``["put", key, value]`` -> ``None``
* ``["delete", key]`` -> ``True`` if the key existed
* ``["cas", key, expected, value]`` -> ``True`` if the value was ``expected`` (``None``
  means "absent") and is now ``value``

Keys are strings; values are strings or bytes. A malformed command is not applied and
returns :class:`KVError` (deterministically, on every server).
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


@attrs.frozen
class KVError:
    reason: str


def encode_get(key: str) -> bytes:
    return _pack(["get", key])


def encode_put(key: str, value: str | bytes) -> bytes:
    return _pack(["put", key, value])


def encode_delete(key: str) -> bytes:
    return _pack(["delete", key])


def encode_cas(key: str, expected: str | bytes | None, value: str | bytes) -> bytes:
    return _pack(["cas", key, expected, value])


_ARITY = {"get": 0, "put": 1, "delete": 0, "cas": 2}
_unpackb = msgpack.unpackb


def decode_command(data: bytes) -> tuple[str, str, list[Any]]:
    """``(op, key, args)``; raises ValueError on anything malformed."""
    try:
        raw = _unpackb(data)
    except Exception as exc:  # msgpack raises many types; sizes are bounded by len(data)
        raise ValueError(f"malformed command: {type(exc).__name__}") from None
    if type(raw) is not list or len(raw) < 2 or type(raw[0]) is not str or type(raw[1]) is not str:
        raise ValueError("malformed command")
    op, key, args = raw[0], raw[1], raw[2:]
    arity = _ARITY.get(op)
    if arity is None or len(args) != arity:
        raise ValueError(f"unknown op or wrong arity: {op!r}")
    for a in args:
        t = type(a)
        if t is not str and t is not bytes and not (op == "cas" and a is None):
            raise ValueError("values must be str or bytes")
    if op == "cas" and args[1] is None:
        raise ValueError("cas new value must not be None")
    return op, key, args


class KVStore:
    """The state machine. ``data`` is a plain dict; snapshots sort the keys."""

    def __init__(self) -> None:
        self.data: dict[str, str | bytes] = {}
        self.applied = 0

    def apply(self, index: int, command: bytes) -> Any:
        self.applied = index
        # Fast path for the common, well-formed put (same checks as decode_command).
        try:
            raw = _unpackb(command)
        except Exception:
            raw = None
        if type(raw) is list and len(raw) == 3 and raw[0] == "put":
            key, value = raw[1], raw[2]
            if type(key) is str and (type(value) is str or type(value) is bytes):
                self.data[key] = value
                return None
        try:
            op, key, args = decode_command(command)
        except ValueError as exc:
            return KVError(str(exc))
        data = self.data
        if op == "get":
            return data.get(key)
        if op == "put":
            data[key] = args[0]
            return None
        if op == "delete":
            return data.pop(key, None) is not None
        expected, value = args
        if data.get(key) == expected and (expected is not None or key not in data):
            data[key] = value
            return True
        return False

    def get(self, key: str) -> str | bytes | None:
        """Local read (use after a ReadIndex confirmation for linearizability)."""
        return self.data.get(key)

    def snapshot(self) -> bytes:
        return _pack([self.applied, [[k, v] for k, v in sorted(self.data.items())]])

    def restore(self, data: bytes) -> None:
        try:
            applied, items = msgpack.unpackb(data, raw=False)
            new = {}
            for k, v in items:
                if type(k) is not str or not isinstance(v, str | bytes):
                    raise ValueError("bad item")
                new[k] = v
        except Exception as exc:
            raise ValueError(f"malformed KV snapshot: {exc}") from None
        self.data = new
        self.applied = int(applied)
