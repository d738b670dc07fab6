"""The replicated KV store: semantics, deterministic encoding, snapshots, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft import kv

keys = st.sampled_from(["a", "b", "c"])
vals = st.one_of(st.text(max_size=5), st.binary(max_size=5))
ops = st.one_of(
    st.tuples(st.just("get"), keys),
    st.tuples(st.just("put"), keys, vals),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("cas"), keys, st.one_of(st.none(), vals), vals),
)


def encode(op):
    return {"get": kv.encode_get, "put": kv.encode_put, "delete": kv.encode_delete,
            "cas": kv.encode_cas}[op[0]](*op[1:])


def test_semantics():
    s = kv.KVStore()
    assert s.apply(1, kv.encode_get("a")) is None
    assert s.apply(2, kv.encode_put("a", "1")) is None
    assert s.apply(3, kv.encode_get("a")) == "1"
    assert s.apply(4, kv.encode_cas("a", "0", "2")) is False
    assert s.apply(5, kv.encode_cas("a", "1", "2")) is True
    assert s.apply(6, kv.encode_cas("b", None, "x")) is True  # absent -> created
    assert s.apply(7, kv.encode_cas("b", None, "y")) is False
    assert s.apply(8, kv.encode_delete("a")) is True
    assert s.apply(9, kv.encode_delete("a")) is False
    assert s.data == {"b": "x"}


@pytest.mark.parametrize("bad", [b"", b"\xc1", kv._pack(["put", "k"]), kv._pack(["nop", "k"]),
                                 kv._pack([1, 2]), kv._pack(["put", "k", 5]),
                                 kv._pack(["cas", "k", "a", None])])
def test_malformed_commands_are_errors_not_crashes(bad):
    s = kv.KVStore()
    r = s.apply(1, bad)
    assert isinstance(r, kv.KVError) and s.data == {}


@settings(max_examples=100, deadline=None)
@given(st.lists(ops, max_size=30))
def test_replicas_agree_and_snapshots_round_trip(history):
    a, b = kv.KVStore(), kv.KVStore()
    model: dict = {}
    for i, op in enumerate(history, 1):
        cmd = encode(op)
        assert cmd == encode(op)  # deterministic bytes
        ra, rb = a.apply(i, cmd), b.apply(i, cmd)
        assert ra == rb
        if op[0] == "put":
            model[op[1]] = op[2]
        elif op[0] == "delete":
            assert ra == (op[1] in model)
            model.pop(op[1], None)
        elif op[0] == "cas":
            if model.get(op[1]) == op[2] and (op[2] is not None or op[1] not in model):
                model[op[1]] = op[3]
                assert ra is True
            else:
                assert ra is False
        else:
            assert ra == model.get(op[1])
    assert a.data == model
    c = kv.KVStore()
    c.restore(a.snapshot())
    assert c.data == a.data and c.snapshot() == a.snapshot() == b.snapshot()


def test_bad_snapshot_raises_value_error():
    with pytest.raises(ValueError):
        kv.KVStore().restore(b"\x93garbage")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(0, 3), st.sampled_from(
    ["put", "get", "cas", "delete", "a"]), st.binary(max_size=2), st.text(max_size=2)),
    max_size=5))
def test_apply_fast_path_matches_decode_command(fields):
    """KVStore.apply's put fast path takes exactly the commands decode_command
    accepts as puts, with the same effect; anything else gets the same KVError."""
    import msgpack

    cmd = msgpack.packb(fields, use_bin_type=True)
    s = kv.KVStore()
    s.data["a"] = "old"
    res = s.apply(1, cmd)
    try:
        op, key, args = kv.decode_command(cmd)
    except ValueError as exc:
        assert res == kv.KVError(str(exc)) and s.data == {"a": "old"}
        return
    if op == "put":
        assert res is None and s.data[key] == args[0]
