"""The wire codec: round trips, and untrusted bytes raise only WireError."""

from __future__ import annotations

import contextlib

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk import wire
from clusterfunk.demo.ping import Hello, Ping, Pong


@wire.struct
@attrs.frozen
class Inner:
    name: str
    tags: dict[str, str]


@wire.message(15)
@attrs.frozen
class Rich:
    a: int = attrs.field(metadata=wire.int_range(wire.MIN_WIRE_INT))
    b: float
    c: bytes
    d: str | None
    e: tuple[Inner, ...]
    f: bool
    g: tuple[int, ...] = ()


texts = st.text(max_size=20)
inners = st.builds(Inner, texts, st.dictionaries(texts, texts, max_size=3))
rich = st.builds(
    Rich,
    st.integers(wire.MIN_WIRE_INT, wire.MAX_WIRE_INT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=64),
    st.none() | texts,
    st.lists(inners, max_size=4).map(tuple),
    st.booleans(),
    st.lists(st.integers(0, 2**32), max_size=5).map(tuple),
)


@given(rich)
@settings(max_examples=300, deadline=None)
def test_round_trip(msg: Rich) -> None:
    data = wire.encode(msg)
    assert wire.decode(data) == msg
    assert wire.encode(wire.decode(data)) == data  # deterministic


@given(st.binary(max_size=300))
@settings(max_examples=2000, deadline=None)
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.decode(data)


@given(rich, st.data())
@settings(max_examples=500, deadline=None)
def test_mutated_messages_decode_or_raise_wire_error(msg: Rich, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw.insert(data.draw(st.integers(0, len(raw))), data.draw(st.integers(0, 255)))
    try:
        out = wire.decode(bytes(raw))
    except wire.WireError:
        return
    assert attrs.has(type(out))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=4), children, max_size=5)
        ),
        max_leaves=20,
    )
)
@settings(max_examples=1000, deadline=None)
def test_well_formed_msgpack_of_the_wrong_shape_is_rejected(value: object) -> None:
    # Ping has three fields and Rich seven: one or two values can never be a message.
    for body in ([wire.WIRE_VERSION, 1, value], [wire.WIRE_VERSION, 15, value, value]):
        with pytest.raises(wire.WireError):
            wire.decode(msgpack.packb(body, use_bin_type=True))
    # A bare value is a message only if it happens to spell one exactly.
    try:
        msg = wire.decode(msgpack.packb(value, use_bin_type=True))
    except wire.WireError:
        return
    assert type(msg) in wire.registered_tags().values()
    assert wire.decode(wire.encode(msg)) == msg


def test_specific_rejections() -> None:
    ok = wire.encode(Ping(1, 0.5))
    assert wire.decode(ok) == Ping(1, 0.5)
    cases = {
        b"": "empty",
        msgpack.packb([2, 1, 1, 0.5, b""]): "version",
        msgpack.packb([1, 9999, 1]): "unknown message tag",
        msgpack.packb([1, 1, "x", 0.5, b""]): "expected int",
        msgpack.packb([1, 1, 1]): "expected 2 to 3 fields",  # sent is required
        msgpack.packb([1, 2, True, 0.5]): "expected int",  # bool is not an int
        msgpack.packb({"a": 1}): "not a clusterfunk message",
    }
    for data, reason in cases.items():
        with pytest.raises(wire.WireError, match=reason):
            wire.decode(data)
    # compatibility (docs/wire.md): a missing trailing field that has a default is
    # filled in (an older sender), extra trailing fields are ignored (a newer one)
    assert wire.decode(msgpack.packb([1, 1, 1, 0.5])) == Ping(1, 0.5)
    assert wire.decode(msgpack.packb([1, 1, 1, 0.5, b"p", 7, ["x"]])) == Ping(1, 0.5, b"p")


def test_size_is_checked_before_decoding() -> None:
    data = wire.encode(Hello(1, bytes(5000)))
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.decode(data, max_size=1000)
    # a tiny packet claiming a huge array is refused without allocating it
    bomb = b"\x95\x01\x03\x01\xc6\xff\xff\xff\xff"
    with pytest.raises(wire.WireError):
        wire.decode(bomb)
    huge_array = b"\xdd\xff\xff\xff\xff"
    with pytest.raises(wire.WireError):
        wire.decode(huge_array)


def test_unregistered_and_duplicate_tags() -> None:
    @attrs.frozen
    class NotOnWire:
        x: int

    with pytest.raises(TypeError):
        wire.encode(NotOnWire(1))
    with pytest.raises(ValueError, match="already used"):
        wire.message(1)(NotOnWire)
    assert wire.registered_tags()[2] is Pong


@wire.struct
@attrs.frozen
class Positive:
    n: int = attrs.field(validator=attrs.validators.ge(1))


@wire.message(13)
@attrs.frozen
class Holder:
    items: tuple[Positive, ...]
    names: tuple[str, ...]
    tags: dict[str, int]


def test_nested_validators_and_container_element_types_are_enforced() -> None:
    ok = Holder((Positive(1), Positive(2)), ("a", "b"), {"x": 1})
    assert wire.decode(wire.encode(ok)) == ok
    bad = [
        [wire.WIRE_VERSION, 13, [[0]], [], {}],  # nested validator
        [wire.WIRE_VERSION, 13, [[]], [], {}],  # nested arity (a required field missing)
        [wire.WIRE_VERSION, 13, [], ["a", 1], {}],  # element type
        [wire.WIRE_VERSION, 13, [], [], {"x": "1"}],  # map value type
        [wire.WIRE_VERSION, 13, [], [], {1: 1}],  # map key type
        [wire.WIRE_VERSION, 13, [], [], {"x": True}],  # bool is not int
    ]
    for body in bad:
        with pytest.raises(wire.WireError):
            wire.decode(msgpack.packb(body, use_bin_type=True, strict_types=False))


_int_values = st.one_of(
    st.integers(-3, 3), st.sampled_from([wire.MAX_WIRE_INT, wire.MAX_WIRE_INT + 1]),
    st.integers(wire.MIN_WIRE_INT - 1, wire.MAX_WIRE_INT + 1),
    st.booleans(), st.none(), st.text(max_size=2), st.floats(allow_nan=False),
)


@given(st.one_of(st.lists(_int_values, max_size=6), _int_values))
@settings(max_examples=500, deadline=None)
def test_int_tuples_are_checked_as_each_int_field_is(value: object) -> None:
    # tuple[int, ...] is checked in one pass; it accepts and refuses exactly what
    # the per-element int decoder does, with the same message
    fast = wire._decoder_for(tuple[int, ...], "M.f")
    elem = wire._decoder_for(int, "M.f[]")

    def reference(v: object) -> tuple[int, ...]:
        if type(v) is not list:
            raise wire.WireError("M.f: expected array")
        return tuple(map(elem, v))

    try:
        want: object = reference(value)
    except wire.WireError as exc:
        with pytest.raises(wire.WireError) as got:
            fast(value)
        assert str(got.value) == str(exc)
    else:
        assert fast(value) == want and type(fast(value)) is tuple
