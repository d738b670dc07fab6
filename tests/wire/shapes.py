"""Shared by the wire tests: every protocol message class, and the smallest
well-typed raw (msgpack-level) value of a field."""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs

import clusterfunk.cluster.messages
import clusterfunk.demo.ping
import clusterfunk.gossip.messages
import clusterfunk.raft.client
import clusterfunk.raft.messages
import clusterfunk.routing.messages  # noqa: F401  (registers the protocols' messages)
from clusterfunk import wire

RANGE_KEY = "wire_range"


def minimal(tp: Any) -> Any:
    """The smallest well-typed raw (msgpack-level) value of a field type."""
    if tp is int:
        return 0
    if tp is float:
        return 0.0
    if tp is str:
        return "a"
    if tp is bytes:
        return b""
    if tp is bool:
        return False
    if tp is Any:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return None
    if origin is tuple:
        return []
    if origin is dict:
        return {}
    if attrs.has(tp):
        return [minimal_field(f) for f in attrs.fields(tp)]
    raise AssertionError(f"unexpected field type {tp!r}")


def minimal_field(f: Any) -> Any:
    """The smallest raw value of field ``f`` (an int at the low end of its range)."""
    if f.type is int and RANGE_KEY in f.metadata:
        return f.metadata[RANGE_KEY][0]
    return minimal(f.type)


def protocol_messages() -> dict[int, type]:
    """Every registered message of the protocols (not the tests' own), by tag."""
    return {t: c for t, c in wire.registered_tags().items()
            if c.__module__.startswith("clusterfunk.")}
