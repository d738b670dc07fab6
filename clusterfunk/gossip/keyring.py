"""The gossip keyring: every packet authenticated with a cluster key (AES-GCM).

A :class:`Keyring` holds one or more AES keys (16, 24 or 32 bytes); exactly one is
the *primary*. Senders seal every packet with the primary key; receivers try every
installed key, primary first. A packet no key opens is dropped and counted.

Packet format (documented in ``docs/wire.md``, section "Gossip keyring")::

    +------+----------------+------------------------------+----------+
    | mode | nonce (12)     | body                         | tag (16) |
    +------+----------------+------------------------------+----------+

* ``mode`` 1 = *sealed*: ``body`` is the AES-GCM ciphertext of the wire-encoded
  message; the associated data is the mode byte.
* ``mode`` 2 = *authenticated only*: ``body`` is the wire-encoded message in clear;
  the tag is AES-GCM over an empty plaintext with ``mode || nonce || body`` as
  associated data (that is, GMAC of the packet).

Either way the overhead is :data:`OVERHEAD` = 29 bytes, which the gossip core's
datagram budget must leave room for (:func:`budget_for`).

Nonces are 96-bit values from an injected source: ``os.urandom`` in production, a
seeded ``random.Random`` in simulation (so runs stay byte-identical). Random 96-bit
nonces under one key stay collision-free far beyond any gossip cluster's traffic
between key rotations (birthday bound ~2**48 packets).

Key rotation across a running cluster (as Serf does it): *install* the new key
everywhere (every node can now open packets sealed with it), *use* it as primary
everywhere (nodes that have not switched yet still open them), then *remove* the
old key everywhere. Each step is an internal query (see :mod:`clusterfunk.gossip.api`).
"""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clusterfunk import wire

MODE_SEALED = 1
MODE_AUTH = 2
NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes a keyring adds to every packet: mode byte, nonce and GCM tag.
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
KEY_SIZES = (16, 24, 32)

NonceSource = Callable[[int], bytes]


class KeyringError(ValueError):
    """An invalid key, or a key operation that would break the keyring's invariants."""


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is a valid AES key (16, 24 or 32 bytes), else raise."""
    if not isinstance(key, bytes | bytearray):
        raise KeyringError(f"a key must be bytes, not {type(key).__name__}")
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"a key must be 16, 24 or 32 bytes long, not {len(key)}")
    return bytes(key)


def decode_key(text: str) -> bytes:
    """A key from its base64 text form (as Serf prints and accepts keys)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise KeyringError("a key must be base64 encoded") from None
    return check_key(raw)


def encode_key(key: bytes) -> str:
    """The base64 text form of a key."""
    return base64.b64encode(check_key(key)).decode("ascii")


def budget_for(max_datagram: int) -> int:
    """The message budget that leaves room for the keyring's overhead in a datagram."""
    return max_datagram - OVERHEAD


def seeded_nonces(rng: random.Random) -> NonceSource:
    """A deterministic nonce source for simulation (never use it in production)."""
    return rng.randbytes


class Keyring:
    """Installed keys in installation order, plus which one is primary.

    Invariants: there is always at least one key; the primary is installed; keys
    are unique. Mutators raise :class:`KeyringError` instead of breaking them.
    """

    def __init__(self, keys: Iterable[bytes], primary: bytes | None = None) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        for k in keys:
            k = check_key(k)
            if k not in self._ciphers:
                self._keys.append(k)
                self._ciphers[k] = AESGCM(k)
        if not self._keys:
            raise KeyringError("a keyring needs at least one key")
        if primary is None:
            primary = self._keys[0]
        primary = check_key(primary)
        if primary not in self._ciphers:
            raise KeyringError("the primary key must be one of the installed keys")
        self._primary = primary
        self._order: list[bytes] = []
        self._order_ciphers: tuple[AESGCM, ...] = ()
        self._reorder()

    @classmethod
    def from_text(cls, keys: Iterable[str]) -> Keyring:
        """A keyring from base64 keys; the first is primary."""
        return cls([decode_key(k) for k in keys])

    def _reorder(self) -> None:
        # Receivers try the primary first: it opens almost every packet.
        self._order = [self._primary, *[k for k in self._keys if k != self._primary]]
        self._order_ciphers = tuple(self._ciphers[k] for k in self._order)

    @property
    def primary(self) -> bytes:
        return self._primary

    @property
    def keys(self) -> list[bytes]:
        """Installed keys, primary first, then in installation order."""
        return list(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._ciphers

    def __len__(self) -> int:
        return len(self._keys)

    def install(self, key: bytes) -> bool:
        """Install a key (receivers accept it from now on). Returns False if present."""
        key = check_key(key)
        if key in self._ciphers:
            return False
        self._keys.append(key)
        self._ciphers[key] = AESGCM(key)
        self._reorder()
        return True

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (senders seal with it from now on)."""
        key = check_key(key)
        if key not in self._ciphers:
            raise KeyringError("cannot use a key that is not installed")
        self._primary = key
        self._reorder()

    def remove(self, key: bytes) -> bool:
        """Remove a key that is not the primary. Returns False if it was not installed."""
        key = check_key(key)
        if key == self._primary:
            raise KeyringError("cannot remove the primary key")
        if key not in self._ciphers:
            return False
        self._keys.remove(key)
        del self._ciphers[key]
        self._reorder()
        return True

    def cipher(self, key: bytes) -> AESGCM:
        return self._ciphers[key]

    def ciphers(self) -> tuple[AESGCM, ...]:
        """Ciphers in the order receivers try them (primary first)."""
        return self._order_ciphers


@attrs.define
class KeyringStats:
    """Counters of a :class:`SecureCodec`."""

    sealed: int = 0
    opened: int = 0
    #: Packets that no installed key authenticates (forged, corrupt, or old keys).
    auth_failed: int = 0
    #: Packets too short or with an unknown mode byte.
    bad_header: int = 0
    #: Authenticated packets whose payload was not a valid message.
    bad_payload: int = 0
    #: Packets opened by a key other than the primary (rotation in progress).
    secondary_key: int = 0


class SecureCodec:
    """Wraps the wire codec with a keyring: ``encode``/``decode`` suit ``Driver``.

    ``decode`` raises only :class:`clusterfunk.wire.WireError`, so the driver drops
    and counts a packet that fails (``stats.malformed``, ``net.malformed`` trace);
    this codec's own :attr:`stats` tell why it failed.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        encrypt: bool = True,
        nonce: NonceSource = os.urandom,
        inner_encode: Callable[[Any], bytes] = wire.encode,
        inner_decode: Callable[[bytes], Any] = wire.decode,
    ) -> None:
        self.keyring = keyring
        self.encrypt = encrypt
        self.nonce = nonce
        self.inner_encode = inner_encode
        self.inner_decode = inner_decode
        self.stats = KeyringStats()

    overhead = OVERHEAD

    # -- bytes --------------------------------------------------------------

    def seal(self, payload: bytes) -> bytes:
        """Authenticate (and, if ``encrypt``, encrypt) ``payload`` with the primary key."""
        nonce = self.nonce(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError("nonce source returned the wrong length")
        cipher = self.keyring.cipher(self.keyring.primary)
        self.stats.sealed += 1
        if self.encrypt:
            head = bytes((MODE_SEALED,))
            return head + nonce + cipher.encrypt(nonce, payload, head)
        head = bytes((MODE_AUTH,)) + nonce
        return head + payload + cipher.encrypt(nonce, b"", head + payload)

    def open(self, data: bytes) -> bytes:
        """The authenticated payload of a packet; raises ``WireError`` if none opens it."""
        stats = self.stats
        if len(data) < OVERHEAD:
            stats.bad_header += 1
            raise wire.WireError("keyring: packet too short")
        mode = data[0]
        nonce = data[1 : 1 + NONCE_SIZE]
        if mode == MODE_SEALED:
            head = data[:1]
            body = data[1 + NONCE_SIZE :]
            for i, cipher in enumerate(self.keyring.ciphers()):
                try:
                    plain = cipher.decrypt(nonce, body, head)
                except InvalidTag:
                    continue
                stats.opened += 1
                if i:
                    stats.secondary_key += 1
                return plain
        elif mode == MODE_AUTH:
            signed = data[:-TAG_SIZE]
            tag = data[-TAG_SIZE:]
            for i, cipher in enumerate(self.keyring.ciphers()):
                try:
                    cipher.decrypt(nonce, tag, signed)
                except InvalidTag:
                    continue
                stats.opened += 1
                if i:
                    stats.secondary_key += 1
                return signed[1 + NONCE_SIZE :]
        else:
            stats.bad_header += 1
            raise wire.WireError(f"keyring: unknown packet mode {mode}")
        stats.auth_failed += 1
        raise wire.WireError("keyring: no installed key authenticates the packet")

    # -- messages (the Driver hooks) ----------------------------------------

    def encode(self, msg: Any) -> bytes:
        return self.seal(self.inner_encode(msg))

    def decode(self, data: bytes) -> Any:
        payload = self.open(data)
        try:
            return self.inner_decode(payload)
        except wire.WireError:
            self.stats.bad_payload += 1
            raise


# ---------------------------------------------------------------------------
# Cluster-wide key operations, carried by internal Serf queries.
#
# Request payload: the raw key bytes. Response payload: b"" for success, else a
# UTF-8 error message. Operations are idempotent (installing a present key or
# removing an absent one succeeds), so a retried rotation step is harmless.
# The key travels inside a gossip packet: only sealed (encrypted) clusters may
# rotate keys this way, which callers enforce.

INSTALL = "install"
USE = "use"
REMOVE = "remove"
KEY_OPS = (INSTALL, USE, REMOVE)
QUERY_PREFIX = "_cf-key-"


def query_name(op: str) -> str:
    """The internal query name of a key operation."""
    if op not in KEY_OPS:
        raise ValueError(f"unknown key operation {op!r}")
    return QUERY_PREFIX + op


def apply_key_op(keyring: Keyring, op: str, key: bytes) -> str | None:
    """Apply one key operation to ``keyring``; returns None or an error message."""
    try:
        if op == INSTALL:
            keyring.install(key)
        elif op == USE:
            keyring.use(key)
        elif op == REMOVE:
            if key in keyring:
                keyring.remove(key)
        else:
            return f"unknown key operation {op!r}"
    except KeyringError as exc:
        return str(exc)
    return None


def register_key_queries(core: Any, keyring: Keyring) -> None:
    """Register the internal query handlers for key install/use/remove on a gossip
    core (``core.register_internal_query(name, handler(now, query) -> bytes)``)."""
    for op in KEY_OPS:

        def handler(now: float, query: Any, _op: str = op) -> bytes:
            err = apply_key_op(keyring, _op, query.payload)
            return b"" if err is None else err.encode("utf-8", "replace")[:512]

        core.register_internal_query(query_name(op), handler)


@attrs.frozen
class KeyResult:
    """Outcome of a cluster-wide key operation."""

    op: str
    #: Members that applied it (the caller included: queries reach their sender), sorted.
    ok: tuple[str, ...]
    #: member -> error message for members that refused.
    errors: dict[str, str]
    #: Live members (the caller included) that were expected to answer.
    expected: int

    @property
    def complete(self) -> bool:
        """Every expected member answered and none refused."""
        return not self.errors and len(self.ok) >= self.expected


def collect_key_result(op: str, responses: dict[str, bytes], expected: int) -> KeyResult:
    """Fold key-operation query responses (b"" = done, else an error) into a result."""
    ok: list[str] = []
    errors: dict[str, str] = {}
    for node in sorted(responses):
        payload = responses[node]
        if payload:
            errors[node] = payload.decode("utf-8", "replace")
        else:
            ok.append(node)
    return KeyResult(op, tuple(ok), errors, expected)
