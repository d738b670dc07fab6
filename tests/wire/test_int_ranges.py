"""Every integer field of every registered message has a range the decoder enforces.

Regression for one datagram that killed every node: a Raft ``Heartbeat`` with
``term = 2**63`` reached SQLite (``OverflowError``), and a gossip ``Dead`` at
``incarnation = 2**62`` put a live member beyond refutation.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import msgpack
import pytest

from clusterfunk import wire
from tests.wire.shapes import RANGE_KEY, minimal_field, protocol_messages


def _protocol_messages() -> list[tuple[int, type]]:
    return list(protocol_messages().items())


def _body(tag: int, cls: type, fields: list[Any]) -> bytes:
    return msgpack.packb([wire.WIRE_VERSION, tag, *fields], use_bin_type=True)


def test_every_protocol_message_has_a_minimal_decodable_form() -> None:
    msgs = _protocol_messages()
    assert len(msgs) >= 30  # raft, gossip, cluster, client and demo messages
    for tag, cls in msgs:
        raw = [minimal_field(f) for f in attrs.fields(cls)]
        try:
            wire.decode(_body(tag, cls, raw))
        except wire.WireError as exc:
            # a message whose own validators refuse the all-zero form is fine,
            # as long as the refusal is a WireError (checked by the decode above)
            assert "invalid field" in str(exc), (cls, exc)


@pytest.mark.parametrize("tag,cls", _protocol_messages(), ids=lambda v: getattr(v, "__name__", v))
def test_int_fields_at_and_past_their_bounds(tag: int, cls: type) -> None:
    fields = attrs.fields(cls)
    base = [minimal_field(f) for f in fields]
    try:
        wire.decode(_body(tag, cls, base))
    except wire.WireError:
        pytest.skip(f"{cls.__name__}: its validators refuse the minimal form")
    for i, f in enumerate(fields):
        if f.type is not int:
            continue
        lo, hi = f.metadata.get(RANGE_KEY, (0, wire.MAX_WIRE_INT))
        for ok in (lo, hi):
            raw = list(base)
            raw[i] = ok
            wire.decode(_body(tag, cls, raw))  # the bounds themselves decode
        for bad in (lo - 1, hi + 1, -(2**63), 2**63, 2**64 - 1):
            if lo <= bad <= hi:
                continue
            raw = list(base)
            raw[i] = bad
            try:
                data = _body(tag, cls, raw)
            except (OverflowError, TypeError):
                continue  # msgpack itself cannot carry it: nobody can send it
            with pytest.raises(wire.WireError):
                wire.decode(data)


def test_floats_must_be_finite() -> None:
    from clusterfunk.demo.ping import Ping

    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(wire.WireError, match="finite"):
            wire.decode(msgpack.packb([wire.WIRE_VERSION, 1, 1, bad, b""]))
    assert wire.decode(wire.encode(Ping(1, 2.5))) == Ping(1, 2.5)


def test_int_range_on_a_non_int_field_is_a_definition_error() -> None:
    with pytest.raises(TypeError, match="int_range"):

        @wire.message(12)
        @attrs.frozen
        class Wrong:
            s: str = attrs.field(metadata=wire.int_range(0, 5))
