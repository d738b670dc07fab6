"""The keyring: packet authentication, encryption, key rotation, bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk import wire
from clusterfunk.demo.ping import Ping, PingCore
from clusterfunk.gossip.keyring import (
    OVERHEAD,
    Keyring,
    KeyringError,
    SecureCodec,
    budget_for,
    decode_key,
    encode_key,
    seeded_nonces,
)
from clusterfunk.sim.simulation import Simulation

K1 = bytes(range(16))
K2 = bytes(range(100, 124))
K3 = bytes(range(200, 232))


def codec(keys: list[bytes], encrypt: bool = True, seed: int = 1) -> SecureCodec:
    return SecureCodec(Keyring(keys), encrypt=encrypt, nonce=seeded_nonces(random.Random(seed)))


@pytest.mark.parametrize("encrypt", [True, False])
def test_round_trip_and_overhead(encrypt: bool) -> None:
    c = codec([K1], encrypt)
    msg = Ping(7, 1.5, b"payload-bytes")
    data = c.encode(msg)
    assert len(data) == len(wire.encode(msg)) + OVERHEAD
    assert c.decode(data) == msg
    assert c.stats.sealed == 1 and c.stats.opened == 1
    # Sealed packets hide the payload; authenticated-only ones carry it in clear.
    assert (b"payload-bytes" in data) is (not encrypt)


@pytest.mark.parametrize("encrypt", [True, False])
def test_every_flipped_byte_is_rejected(encrypt: bool) -> None:
    c = codec([K1], encrypt)
    data = c.encode(Ping(1, 0.0, b"x" * 20))
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(wire.WireError):
            c.decode(bytes(bad))
    assert c.stats.opened == 0
    assert c.stats.auth_failed + c.stats.bad_header == len(data)


def test_wrong_key_and_short_packets_are_counted() -> None:
    sender, receiver = codec([K1]), codec([K2])
    with pytest.raises(wire.WireError, match="no installed key"):
        receiver.decode(sender.encode(Ping(1, 0.0)))
    with pytest.raises(wire.WireError, match="too short"):
        receiver.decode(b"\x01abc")
    with pytest.raises(wire.WireError, match="unknown packet mode"):
        receiver.decode(b"\x09" + bytes(40))
    # A plain (unkeyed) wire message is not accepted by a keyed node.
    with pytest.raises(wire.WireError):
        receiver.decode(wire.encode(Ping(1, 0.0, bytes(40))))
    assert receiver.stats.auth_failed == 1
    assert receiver.stats.bad_header == 3  # short, unknown mode, unkeyed msgpack


def test_authenticated_garbage_is_counted_as_bad_payload() -> None:
    c = codec([K1])
    with pytest.raises(wire.WireError):
        c.decode(c.seal(b"\xc1 not msgpack"))
    assert c.stats.bad_payload == 1


def test_receivers_try_every_installed_key() -> None:
    old = codec([K1])
    both = codec([K1, K2])
    both.keyring.use(K2)
    # A node still on the old primary reaches a node that switched, and vice versa
    # once the old node has the new key installed.
    assert both.decode(old.encode(Ping(1, 0.0))) == Ping(1, 0.0)
    assert both.stats.secondary_key == 1
    old.keyring.install(K2)
    assert old.decode(both.encode(Ping(2, 0.0))) == Ping(2, 0.0)
    # After removal the old key no longer opens anything.
    both.keyring.remove(K1)
    old_only = codec([K1])
    with pytest.raises(wire.WireError):
        both.decode(old_only.encode(Ping(3, 0.0)))


def test_keyring_invariants() -> None:
    with pytest.raises(KeyringError):
        Keyring([])
    with pytest.raises(KeyringError):
        Keyring([b"short"])
    with pytest.raises(KeyringError):
        Keyring([K1], primary=K2)
    ring = Keyring([K1, K2, K1])
    assert ring.keys == [K1, K2] and ring.primary == K1
    assert ring.install(K3) is True and ring.install(K3) is False
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(K1)
    with pytest.raises(KeyringError, match="not installed"):
        ring.use(bytes(32))
    ring.use(K3)
    assert ring.keys == [K3, K1, K2]
    assert ring.remove(K1) is True and ring.remove(K1) is False
    assert len(ring) == 2 and K1 not in ring


def test_text_keys() -> None:
    assert decode_key(encode_key(K3)) == K3
    assert Keyring.from_text([encode_key(K2), encode_key(K1)]).primary == K2
    with pytest.raises(KeyringError):
        decode_key("not base64!!")
    with pytest.raises(KeyringError):
        decode_key(encode_key(K1)[:-4])  # 12 bytes


def test_seeded_nonces_make_output_deterministic() -> None:
    a, b = codec([K1], seed=5), codec([K1], seed=5)
    msgs = [Ping(i, 0.25 * i) for i in range(5)]
    assert [a.encode(m) for m in msgs] == [b.encode(m) for m in msgs]
    c = codec([K1], seed=6)
    assert c.encode(msgs[0]) != codec([K1], seed=5).encode(msgs[0])


def test_budget_leaves_room_for_overhead() -> None:
    assert budget_for(1400) == 1400 - OVERHEAD
    c = codec([K3])
    body = Ping(1, 0.0, b"")
    pad = budget_for(1400) - len(wire.encode(body)) - 2  # bin8 header grows by 2
    assert len(c.encode(Ping(1, 0.0, bytes(pad)))) <= 1400


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_only_raise_wire_error(data: bytes, encrypt: bool) -> None:
    c = codec([K1, K2], encrypt)
    with pytest.raises(wire.WireError):
        c.decode(data)


def test_keyed_simulation_drops_and_counts_foreign_packets() -> None:
    """Three keyed ping nodes talk; a fourth with another key is shut out, counted."""
    sim = Simulation(seed=3)
    addrs = [f"n{i}:7000" for i in range(1, 5)]
    cores: dict[str, PingCore] = {}
    codecs: dict[str, SecureCodec] = {}
    drivers: dict[str, object] = {}

    def factory(host):  # type: ignore[no-untyped-def]
        key = K3 if host.name == "n4" else K1
        c = SecureCodec(Keyring([key]), nonce=seeded_nonces(random.Random(f"k/{host.name}")))
        core = PingCore(host.address(7000), addrs, host.rng, interval=0.5)
        drivers[host.name] = host.driver(core, 7000, encode=c.encode, decode=c.decode)
        cores[host.name], codecs[host.name] = core, c
        return core

    for i in range(1, 5):
        sim.add_node(f"n{i}", factory)
    sim.run_until(30.0)
    assert cores["n4"].pongs == 0
    assert all(cores[n].pongs > 0 for n in ("n1", "n2", "n3"))
    assert codecs["n4"].stats.auth_failed > 0
    rejected = sum(codecs[n].stats.auth_failed for n in ("n1", "n2", "n3"))
    # Every packet n4 sent (pings and Hello frames) was dropped and counted.
    sent = drivers["n4"].stats  # type: ignore[attr-defined]
    assert rejected == sent.datagrams_out + sent.frames_out
    assert sum(drivers[n].stats.malformed for n in ("n1", "n2", "n3")) == rejected  # type: ignore[attr-defined]
