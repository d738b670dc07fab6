"""Generated decoders build messages without the frozen ``__init__`` where that is
exact, and call the class where it is not; ``wire.is_immutable`` says which decoded
messages may be shared (the simulator's decode memo relies on it)."""

from __future__ import annotations

from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clusterfunk.cluster.messages
import clusterfunk.demo.ping
import clusterfunk.gossip.messages
import clusterfunk.raft.client
import clusterfunk.raft.messages  # noqa: F401  (registers the protocols' messages)
from clusterfunk import wire
from clusterfunk.gossip.messages import Compound, PushPull
from clusterfunk.raft.messages import AppendEntries, Heartbeat, HeartbeatResponse
from tests.wire.shapes import minimal_field, protocol_messages


def _fields_of(msg: Any) -> list[Any]:
    return [getattr(msg, f.name) for f in attrs.fields(type(msg))]


@pytest.mark.parametrize("tag,cls", list(protocol_messages().items()),
                         ids=lambda v: getattr(v, "__name__", v))
def test_a_decoded_message_is_the_object_its_class_builds(tag: int, cls: type) -> None:
    body = [minimal_field(f) for f in attrs.fields(cls)]
    try:
        msg = wire.decode(msgpack.packb([wire.WIRE_VERSION, tag, *body], use_bin_type=True))
    except wire.WireError as exc:  # the class's own validators refuse the minimal form
        assert "invalid field" in str(exc)
        return
    assert type(msg) is cls
    built = cls(*_fields_of(msg))  # every slot is set (getattr would raise otherwise)
    assert msg == built and repr(msg) == repr(built)
    if wire.is_immutable(cls):
        assert hash(msg) == hash(built)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        msg.x = 1  # still frozen
    assert wire.encode(msg) == wire.encode(built)


@given(st.integers(0, 2**63 - 1), st.text(max_size=8), st.integers(0, 2**63 - 1),
       st.integers(0, 2**63 - 1))
@settings(max_examples=200, deadline=None)
def test_heartbeat_round_trip_equals_the_constructed_message(term: int, sender: str,
                                                             commit: int, ctx: int) -> None:
    hb = Heartbeat(term, sender, commit, ctx)
    out = wire.decode(wire.encode(hb))
    assert out == hb and hash(out) == hash(hb) and _fields_of(out) == [term, sender, commit, ctx]


@wire.message(16)
@attrs.frozen
class Hooked:
    n: int

    def __attrs_post_init__(self) -> None:
        if self.n == 13:
            raise ValueError("unlucky")


@wire.message(17)
@attrs.frozen
class WithValidator:
    n: int = attrs.field(validator=attrs.validators.le(10))


@wire.message(18)
@attrs.frozen
class Shapes:
    a: tuple[int, ...]
    b: str | None
    c: bytes


@wire.message(19)
@attrs.frozen
class WithMap:
    tags: dict[str, str]


@wire.message(21)
@attrs.frozen
class WithAny:
    x: Any


@wire.message(22)
@attrs.define
class NotFrozen:
    n: int


def test_post_init_hooks_and_validators_still_run() -> None:
    assert wire.decode(wire.encode(Hooked(1))) == Hooked(1)
    with pytest.raises(wire.WireError, match="Hooked: invalid field: unlucky"):
        wire.decode(msgpack.packb([wire.WIRE_VERSION, 16, 13]))
    assert wire.decode(wire.encode(WithValidator(10))) == WithValidator(10)
    with pytest.raises(wire.WireError, match="WithValidator: invalid field"):
        wire.decode(msgpack.packb([wire.WIRE_VERSION, 17, 11]))


def test_checks_stay_strict_on_the_fast_path() -> None:
    ok = Shapes((1, 2), None, b"x")
    assert wire.decode(wire.encode(ok)) == ok
    for body, reason in [
        ([[1, -1], None, b""], "out of range"),
        ([[1, True], None, b""], "expected int"),
        ([[], 5, b""], "expected str"),
        ([[], None, "x"], "expected bytes"),
        ([[], None], "expected 3 fields"),
        ([[1, True], None, b"", 1], "expected int"),  # extra fields change no check
    ]:
        with pytest.raises(wire.WireError, match=reason):
            wire.decode(msgpack.packb([wire.WIRE_VERSION, 18, *body], use_bin_type=True))
    # a newer sender's extra trailing field is ignored (docs/wire.md, compatibility)
    assert wire.decode(msgpack.packb([wire.WIRE_VERSION, 18, [1], None, b"x", 1],
                                     use_bin_type=True)) == Shapes((1,), None, b"x")


def test_which_messages_are_immutable() -> None:
    assert wire.is_immutable(Heartbeat) and wire.is_immutable(HeartbeatResponse)
    assert wire.is_immutable(AppendEntries) and wire.is_immutable(Compound)
    assert wire.is_immutable(Shapes) and wire.is_immutable(Hooked)
    assert not wire.is_immutable(WithMap)  # a dict can be changed in place
    assert not wire.is_immutable(WithAny)
    assert not wire.is_immutable(NotFrozen)
    assert not wire.is_immutable(PushPull)  # member states carry tag maps
    assert not wire.is_immutable(int)  # not a message at all
