"""The trace schema of ``docs/trace.md``, as the audit checks it.

Only what the documentation says is used: the common fields (``t``, ``node``,
``ev``) on every line, and for each documented event the fields it must carry,
their JSON types and, where the documentation lists them, their allowed values.
An event name the table does not know is accepted as it is (the schema grows by
adding events) and ignored by the checks.
"""

from __future__ import annotations

import math
from typing import Any

# JSON types, as predicates (bool is not a number here, although Python says so).
INT = "int"
NUM = "number"
STR = "string"
LIST = "list"
BOOL = "bool"
ANY = "any"

#: Allowed values of enumerated fields (docs/trace.md).
RAFT_ROLES = ("follower", "precandidate", "candidate", "leader", "nonvoter")
GOSSIP_STATUSES = ("alive", "suspect", "dead", "left")
KV_OPS = ("get", "put", "delete", "cas")
KV_OUTCOMES = ("ok", "fail", "unknown")
MAP_PHASES = ("proposed", "committed")
REQUEST_OUTCOMES = ("ok", "moved", "busy", "error")

Field = tuple[str, str, tuple[Any, ...] | None]  # name, type, allowed values


def _f(name: str, kind: str, values: tuple[Any, ...] | None = None) -> Field:
    return (name, kind, values)


#: Required fields per event. Fields documented as optional are not listed.
EVENTS: dict[str, tuple[Field, ...]] = {
    # simulator
    "sim.start": (_f("seed", INT), _f("nodes", LIST)),
    "sim.add": (_f("target", STR),),
    "sim.crash": (_f("target", STR),),
    "sim.restart": (_f("target", STR),),
    "sim.pause": (_f("target", STR),),
    "sim.resume": (_f("target", STR),),
    "sim.partition": (_f("groups", LIST),),
    "sim.heal": (),
    "sim.skew": (_f("target", STR), _f("offset", NUM), _f("drift", NUM)),
    "sim.link": (
        _f("latency", NUM), _f("jitter", NUM), _f("loss", NUM),
        _f("duplicate", NUM), _f("reorder", NUM), _f("stream_reset", NUM),
    ),
    "sim.disk": (_f("target", STR), _f("kind", STR)),
    "sim.stall": (_f("target", STR), _f("until", NUM)),
    "sim.end": (_f("events", INT),),
    # network
    "net.send": (_f("src", STR), _f("dst", STR), _f("kind", STR), _f("bytes", INT)),
    "net.deliver": (_f("src", STR), _f("dst", STR), _f("kind", STR), _f("bytes", INT)),
    "net.drop": (_f("src", STR), _f("dst", STR), _f("kind", STR), _f("reason", STR)),
    "net.malformed": (_f("src", STR), _f("reason", STR)),
    "net.oversize": (_f("dst", STR), _f("bytes", INT), _f("msg", STR)),
    # ping stand-in
    "ping.send": (_f("peer", STR), _f("seq", INT)),
    "ping.rtt": (_f("peer", STR), _f("seq", INT), _f("rtt", NUM)),
    # Raft
    "raft.role": (_f("term", INT), _f("role", STR, RAFT_ROLES)),
    "raft.apply": (_f("index", INT), _f("term", INT), _f("digest", STR)),
    "raft.snapshot": (_f("index", INT), _f("term", INT)),
    "raft.config": (_f("index", INT), _f("voters", LIST), _f("nonvoters", LIST)),
    # KV clients
    "kv.call": (_f("client", STR), _f("op", STR, KV_OPS), _f("key", STR)),
    "kv.return": (_f("client", STR), _f("outcome", STR, KV_OUTCOMES)),
    # gossip
    "gossip.member": (
        _f("member", STR), _f("status", STR, GOSSIP_STATUSES), _f("incarnation", INT),
    ),
    "gossip.refute": (_f("incarnation", INT),),
    "gossip.reap": (_f("member", STR), _f("status", STR), _f("incarnation", INT)),
    "gossip.joined": (_f("via", STR),),
    "gossip.join_failed": (_f("seeds", LIST),),
    "gossip.event": (_f("name", STR), _f("ltime", INT)),
    "gossip.query_done": (
        _f("id", INT), _f("name", STR), _f("acks", INT), _f("responses", INT),
    ),
    # cluster
    "cluster.state": (_f("state", STR), _f("role", STR)),
    "cluster.shardmap": (
        _f("phase", STR, MAP_PHASES), _f("index", INT), _f("nodes", LIST),
        _f("digest", STR), _f("moved", INT),
    ),
    "cluster.ack": (_f("from", STR), _f("index", INT)),
    # sharded requests (issue 9; names as the issue fixes them)
    "shard.release": (_f("index", INT), _f("shards", LIST)),
    "shard.acquire": (_f("index", INT), _f("shards", LIST)),
    "app.request": (
        _f("client", STR), _f("id", ANY), _f("key", ANY), _f("shard", INT),
        _f("outcome", STR, REQUEST_OUTCOMES),
    ),
}


def _is(kind: str, v: Any) -> bool:
    if kind == ANY:
        return True
    if kind == INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == NUM:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == STR:
        return isinstance(v, str)
    if kind == LIST:
        return isinstance(v, list)
    if kind == BOOL:
        return isinstance(v, bool)
    raise AssertionError(kind)


_FAST = {INT: (int,), NUM: (int, float), STR: (str,), LIST: (list,), BOOL: (bool,)}


def problem(rec: Any) -> str | None:
    """What is wrong with one decoded line, or None if it follows the schema."""
    # Fast path: exact JSON types, every required field present (nearly every line).
    if type(rec) is dict:
        t = rec.get("t")
        if type(rec.get("node")) is str and (type(t) is float or type(t) is int):
            ev = rec.get("ev")
            fields = EVENTS.get(ev) if type(ev) is str else None
            if fields is not None and (t - t == 0):  # finite
                for name, kind, values in fields:
                    if kind == ANY:
                        if name not in rec:
                            break
                        continue
                    v: Any = rec.get(name)
                    tv = type(v)
                    if tv not in _FAST[kind] or (values is not None and v not in values):
                        break
                    if tv is float and v - v != 0:  # inf, nan
                        break
                else:
                    if ev not in ("shard.release", "shard.acquire"):
                        return None
    return _problem(rec)


def _problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"a line must be a JSON object, not {type(rec).__name__}"
    for name, kind in (("t", NUM), ("node", STR), ("ev", STR)):
        if name not in rec:
            return f"missing field {name!r}"
        if not _is(kind, rec[name]):
            return f"field {name!r} must be a {kind}, not {rec[name]!r}"
    ev = rec["ev"]
    fields = EVENTS.get(ev)
    if fields is None:
        if "." not in ev:
            return f"event name {ev!r} is not of the form area.name"
        return None
    for name, kind, values in fields:
        if name not in rec:
            return f"{ev}: missing field {name!r}"
        v = rec[name]
        if not _is(kind, v):
            return f"{ev}: field {name!r} must be a {kind}, not {v!r}"
        if values is not None and v not in values:
            return f"{ev}: field {name!r} is {v!r}, not one of {', '.join(values)}"
    if ev in ("shard.release", "shard.acquire") and not all(
        _is(INT, s) for s in rec["shards"]
    ):
        return f"{ev}: field 'shards' must be a list of ints"
    return None
