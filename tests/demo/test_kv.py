"""The demo counter service (clusterfunk/demo/kv.py): a model-based property test
(requests, releases and hand-overs between two nodes keep every counter), and bad
input (payloads, handed-over blobs) refused without changing the store."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.demo import kv
from clusterfunk.routing.api import ServiceError, ShardService

N_SHARDS = 8


def shard_of(key: int) -> int:
    return key % N_SHARDS


def test_it_is_a_shard_service() -> None:
    svc: ShardService = kv.CounterService()  # mypy checks the Protocol
    assert svc is not None


step = st.one_of(
    st.tuples(st.just("req"), st.integers(0, 3 * N_SHARDS),
              st.sampled_from(["incr", "get", "put"]), st.integers(-5, 5)),
    # move some shards from one node to the other (release, then acquire)
    st.tuples(st.just("move"), st.frozensets(st.integers(0, N_SHARDS - 1)),
              st.sampled_from([0, 1]), st.just(0)),
    # the holder crashes: its shards' state is gone, someone else starts them empty
    st.tuples(st.just("crash"), st.frozensets(st.integers(0, N_SHARDS - 1)),
              st.just(0), st.just(0)),
)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_counters_survive_handovers(steps) -> None:
    """Two nodes serve disjoint shards; every answer matches a single dict model,
    whatever the sequence of requests and hand-overs (state lost only on a crash)."""
    nodes = [kv.CounterService(shard_of), kv.CounterService(shard_of)]
    nodes[0].acquire(frozenset(range(N_SHARDS)), {})
    model: dict[int, int] = {}
    for kind, a, b, c in steps:
        if kind == "req":
            key, op, arg = a, b, c
            owner = [n for n in nodes if shard_of(key) in n.served()]
            assert len(owner) == 1
            payload = kv.get() if op == "get" else kv.put(arg) if op == "put" else kv.incr(arg)
            reply = kv.decode_reply(owner[0].handle(shard_of(key), key, payload))
            old = model.get(key, 0)
            if op == "get":
                assert reply == old
            elif op == "put":
                assert reply == old
                model[key] = arg
            else:
                assert reply == old + arg
                model[key] = old + arg
        elif kind == "move":
            src, dst = nodes[b], nodes[1 - b]
            shards = frozenset(s for s in a if s in src.served())
            blobs = src.release(shards)
            assert set(blobs) <= shards
            # the wire: blobs are bytes, they travel as they are
            dst.acquire(shards, {s: bytes(v) for s, v in blobs.items()})
        else:  # crash of whoever holds these shards: they restart empty elsewhere
            for s in a:
                holder = next(n for n in nodes if s in n.served())
                holder.data.pop(s)
                nodes[0].acquire(frozenset([s]), {})
                for k in [k for k in model if shard_of(k) == s]:
                    del model[k]
    served = [n.served() for n in nodes]
    assert served[0] | served[1] == frozenset(range(N_SHARDS))
    assert not served[0] & served[1]
    for key, v in model.items():
        holder = next(n for n in nodes if shard_of(key) in n.served())
        assert holder.value(shard_of(key), key) == v


@given(st.dictionaries(st.integers(kv.INT64_MIN, kv.INT64_MAX),
                       st.integers(kv.INT64_MIN, kv.INT64_MAX), max_size=50))
def test_shard_blob_roundtrip(items) -> None:
    blob = kv.encode_shard(items)
    assert kv.decode_shard(blob) == items
    assert blob == kv.encode_shard(dict(reversed(list(items.items()))))  # canonical


@settings(max_examples=150)
@given(payload=st.binary(max_size=80) | st.builds(
    msgpack.packb, st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=6)
        | st.binary(max_size=4),
        lambda inner: st.lists(inner, max_size=3), max_leaves=6)))
def test_bad_payloads_are_refused_and_change_nothing(payload) -> None:
    svc = kv.CounterService()
    svc.acquire(frozenset([0]), {0: kv.encode_shard({7: 3})})
    try:
        reply = svc.handle(0, 7, payload)
    except ServiceError:
        assert svc.data == {0: {7: 3}}
        assert svc.refused == 1
        return
    # accepted: it was a well-formed op, and the reply is an int
    op, _ = kv.decode_op(payload)
    assert op in kv.OPS
    kv.decode_reply(reply)


@settings(max_examples=150)
@given(blob=st.binary(max_size=60))
def test_bad_state_blobs_are_dropped_and_counted(blob) -> None:
    svc = kv.CounterService()
    try:
        expected = kv.decode_shard(blob)
    except ValueError:
        expected = None
    svc.acquire(frozenset([3]), {3: blob})
    if expected is None:
        assert svc.bad_state == 1 and svc.data == {3: {}}
    else:
        assert svc.bad_state == 0 and svc.data == {3: expected}


def test_refusals() -> None:
    svc = kv.CounterService(shard_of)
    svc.acquire(frozenset([1]), {})
    with pytest.raises(ServiceError, match="not served"):
        svc.handle(2, 2, kv.incr())
    with pytest.raises(ServiceError, match="not in shard"):
        svc.handle(1, 2, kv.incr())
    svc.handle(1, 1, kv.put(kv.INT64_MAX))
    with pytest.raises(ServiceError, match="overflow"):
        svc.handle(1, 1, kv.incr())
    assert kv.decode_reply(svc.handle(1, 1, kv.get())) == kv.INT64_MAX
    with pytest.raises(ServiceError, match="payload of"):
        svc.handle(1, 1, b"\x90" * 100)
    with pytest.raises(ServiceError):
        svc.handle(1, 1, msgpack.packb(["get", 1]))
    with pytest.raises(ServiceError):
        svc.handle(1, 1, msgpack.packb(["put"]))
    with pytest.raises(ServiceError):
        svc.handle(1, 1, msgpack.packb(["incr", True]))
    assert svc.refused == 7 and svc.handled == 2
    with pytest.raises(ValueError):
        kv.encode_op("del")
    with pytest.raises(ValueError):
        kv.decode_reply(msgpack.packb("x"))
    # release hands over only shards with keys; a released shard is no longer served
    svc.acquire(frozenset([5]), {})
    assert set(svc.release(frozenset([1, 5]))) == {1}
    assert svc.served() == frozenset()
