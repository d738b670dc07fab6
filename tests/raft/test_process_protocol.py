"""The raft-node client protocol's framing: round trips, split reads, bad input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft.client import (
    ClientReply,
    ClientRequest,
    FrameBuffer,
    ProtocolError,
    frame,
)
from clusterfunk.raft.kv_server import parse_peers


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**40), st.binary(max_size=300), st.booleans()), max_size=20),
    st.integers(1, 64),
)
def test_frames_survive_any_split(reqs, chunk):
    msgs = [ClientRequest(i, c, r) for i, c, r in reqs]
    data = b"".join(frame(m) for m in msgs)
    buf = FrameBuffer()
    got = []
    for k in range(0, len(data), chunk):
        got += buf.feed(data[k : k + chunk])
    assert got == msgs


def test_reply_round_trip_with_results():
    buf = FrameBuffer()
    replies = [
        ClientReply(1, "ok", "value"),
        ClientReply(2, "ok", True),
        ClientReply(3, "not_leader", None, "n2"),
        ClientReply(4, "ok", None),
    ]
    assert buf.feed(b"".join(frame(r) for r in replies)) == replies


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">I", 0),  # empty frame
        struct.pack(">I", 1 << 30),  # claims 1 GiB
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # not msgpack
        struct.pack(">I", 2) + b"\x92\x07",  # wrong wire version
    ],
)
def test_bad_frames_raise_protocol_error(data):
    with pytest.raises(ProtocolError):
        FrameBuffer(max_frame=1 << 20).feed(data)


def test_parse_peers():
    assert parse_peers("n1=127.0.0.1:1, n2=[::1]:2") == {"n1": "127.0.0.1:1", "n2": "[::1]:2"}
    with pytest.raises(ValueError):
        parse_peers("n1:127.0.0.1:1")


def test_batching_state_machine_applies_commands_in_order_at_one_index():
    from clusterfunk.raft import kv
    from clusterfunk.raft.kv_server import BATCH_MAGIC, BatchingStateMachine, encode_batch

    sm = BatchingStateMachine(kv.KVStore())
    batch = encode_batch(
        [kv.encode_put("a", "1"), kv.encode_cas("a", "1", "2"), kv.encode_get("a"), b"junk"]
    )
    res = sm.apply(7, batch)
    assert res[:3] == [None, True, "2"] and isinstance(res[3], kv.KVError)
    assert sm.get("a") == "2" and sm.applied == 7
    assert sm.apply(8, kv.encode_get("a")) == "2"  # plain entries pass through
    assert isinstance(sm.apply(9, BATCH_MAGIC + b"\xc1"), kv.KVError)  # malformed batch
    assert isinstance(sm.apply(9, encode_batch([])[:2] + b"\x91\x01"), kv.KVError)  # not bytes
    other = BatchingStateMachine(kv.KVStore())
    other.restore(sm.snapshot())
    assert other.get("a") == "2"


def test_client_address_options():
    import argparse

    from clusterfunk.cli.raft_node import _client_bind, add_parser

    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers())
    base = [
        "raft-node",
        "--id",
        "n1",
        "--bind",
        "127.0.0.1:9001",
        "--peers",
        "n1=127.0.0.1:9001",
        "--data-dir",
        "d",
    ]
    assert _client_bind(ap.parse_args(base)) == ("127.0.0.1", 9101)
    assert _client_bind(ap.parse_args([*base, "--client-port", "7000"])) == ("127.0.0.1", 7000)
    args = ap.parse_args([*base, "--client-bind", "0.0.0.0:7001", "--no-batch"])
    assert _client_bind(args) == ("0.0.0.0", 7001) and args.batch is False
    assert ap.parse_args(base).store == "sqlite"


# -- the specialised client codec agrees with the generic wire codec -------------

_results = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8),
              st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**64 - 1), st.binary(max_size=40), st.booleans(),
       st.sampled_from(["ok", "not_leader", "unknown", "error"]), _results,
       st.one_of(st.none(), st.text(max_size=4)))
def test_fast_frames_equal_generic_frames(rid, command, read, status, result, leader):
    from clusterfunk.raft.client import reply_frame, request_frame

    assert request_frame(rid, command, read) == frame(ClientRequest(rid, command, read))
    rep = ClientReply(rid, status, result, leader)
    assert reply_frame(rid, status, result, leader) == frame(rep)
    assert FrameBuffer().feed(frame(rep)) == [rep]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64 - 1),
                          st.text(max_size=3), st.binary(max_size=3),
                          st.lists(st.integers(0, 3), max_size=2)), max_size=7))
def test_fast_decode_accepts_and_refuses_exactly_like_wire(fields):
    """Near-miss bodies (wrong types, arity, tag, version) decode to the same message
    or fail the same way through the fast path as through ``wire.decode``."""
    import msgpack

    from clusterfunk import wire

    for head in ([1, 90], [1, 91], [2, 90], [1, 92], []):
        body = msgpack.packb([*head, *fields], use_bin_type=True)
        try:
            want: object = wire.decode(body)
        except wire.WireError:
            want = ProtocolError
        try:
            got: object = FrameBuffer().feed(struct.pack(">I", len(body)) + body)[0]
        except ProtocolError:
            got = ProtocolError
        assert got == want
