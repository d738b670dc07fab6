"""Stream framing and the connection hello, sans-I/O (see ``docs/wire.md``).

A TCP connection carries, from the dialer to the acceptor only:

1. a hello: ``MAGIC`` (4 bytes: ``b"CFK"`` + stream version 1), a 2-byte
   big-endian length ``n`` (1 .. :data:`MAX_HELLO_ADDRESS`), then ``n`` bytes of
   UTF-8: the dialer's advertised ``host:port`` (its listening address).
   Version 2 (``MAGIC_V2``, ``b"CFK\x02"``) adds the dialer's node id after the
   address: a 2-byte length ``m`` (1 .. :data:`MAX_NODE_ID`) and ``m`` bytes of
   UTF-8. Under TLS the acceptor checks the id against the dialer's certificate.
   A dialer with a node id sends version 2; acceptors read both;
2. frames: a 4-byte big-endian length ``n`` (1 .. ``max_frame``), then ``n`` bytes.

The acceptor never writes. Lengths are checked *before* any buffer for the body
is grown, so a peer that claims a 4 GiB frame costs nothing but a closed
connection.

:class:`FrameReader` is a pure parser: feed it bytes, get frames out, or a
:class:`FramingError` that means "close this connection".
"""

from __future__ import annotations

import struct

from clusterfunk import wire
from clusterfunk.runtime.api import split_address

MAGIC = b"CFK\x01"
MAGIC_V2 = b"CFK\x02"
MAX_HELLO_ADDRESS = 1024
MAX_NODE_ID = 255
DEFAULT_MAX_FRAME = wire.MAX_MESSAGE_BYTES  # 64 MiB

_HEADER = struct.Struct(">I")
_HELLO_HEADER = struct.Struct(">4sH")
_U16 = struct.Struct(">H")
pack_length = _HEADER.pack


class FramingError(Exception):
    """The peer broke the stream protocol; the connection must be closed."""


def encode_hello(address: str, node_id: str | None = None) -> bytes:
    """The hello: version 1 without ``node_id``, version 2 with it."""
    raw = address.encode("utf-8")
    if not 0 < len(raw) <= MAX_HELLO_ADDRESS:
        raise ValueError(f"advertised address too long or empty: {address!r}")
    if node_id is None:
        return _HELLO_HEADER.pack(MAGIC, len(raw)) + raw
    ident = node_id.encode("utf-8")
    if not 0 < len(ident) <= MAX_NODE_ID:
        raise ValueError(f"node id too long or empty: {node_id!r}")
    return _HELLO_HEADER.pack(MAGIC_V2, len(raw)) + raw + _U16.pack(len(ident)) + ident


def encode_frames(frames: list[bytes]) -> bytes:
    """All ``frames`` length-prefixed, as one buffer (one write, one syscall)."""
    parts: list[bytes] = []
    for f in frames:
        parts.append(_HEADER.pack(len(f)))
        parts.append(f)
    return b"".join(parts)


class FrameReader:
    """Incremental parser for the acceptor side of a connection.

    Invariant: ``self._buf`` never holds more than one header plus one frame body
    of at most ``max_frame`` bytes beyond what has been returned (plus at most one
    read's worth of following data).
    """

    __slots__ = ("_buf", "_need", "error", "max_frame", "node_id", "peer")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.peer: str | None = None  # the advertised address, once the hello is read
        self.node_id: str | None = None  # the claimed node id (hello version 2 only)
        self._need = 0
        #: A framing error found after some good frames of the same chunk: those
        #: frames are returned first, the error is raised by :meth:`check`.
        self.error: FramingError | None = None

    def check(self) -> None:
        """Raise the framing error found behind the frames last returned, if any."""
        if self.error is not None:
            raise self.error

    @property
    def held(self) -> int:
        """Bytes this reader holds or has been told to expect for the item it is
        reading (the declared size of a partly received frame): its memory charge."""
        return max(self._need, len(self._buf))

    @property
    def partial(self) -> bool:
        """True while a frame (or the hello) has begun but is not complete."""
        return bool(self._buf)

    @property
    def wanted(self) -> int:
        """How many more bytes complete the item being read (a hint for read sizes)."""
        return max(self._need - len(self._buf), 0)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Append received bytes; return the complete frames now available, in order.

        Raises :class:`FramingError` when the stream is broken; if good frames
        precede the breakage in this chunk, they are returned and the error waits
        in :attr:`error` (raised by :meth:`check` or the next :meth:`feed`).
        """
        self.check()
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            src = data  # fast path: parse straight out of the received chunk
        pos = 0
        n = len(src)
        if self.peer is None:
            pos = self._read_hello(src)
            if pos == 0:
                self._keep(src, 0)
                return []
        frames: list[bytes] = []
        max_frame = self.max_frame
        unpack = _HEADER.unpack_from
        while n - pos >= 4:
            (length,) = unpack(src, pos)
            if length == 0 or length > max_frame:
                error = FramingError(f"bad frame length {length} (limit {max_frame})")
                if not frames:
                    raise error
                self.error = error
                self._buf = bytearray()
                return frames
            end = pos + 4 + length
            if end > n:
                self._need = 4 + length
                break
            frames.append(bytes(src[pos + 4 : end]))
            pos = end
        else:
            self._need = 4
        self._keep(src, pos)
        return frames

    def _keep(self, src: bytes | bytearray, pos: int) -> None:
        if src is self._buf:
            if pos:
                del self._buf[:pos]
        else:
            self._buf = bytearray(src[pos:])

    def _read_hello(self, src: bytes | bytearray) -> int:
        """Parse the hello at the start of ``src``; 0 means "need more bytes"."""
        n = len(src)
        if n >= 4 and src[:4] not in (MAGIC, MAGIC_V2):
            raise FramingError("bad hello magic")
        if n < _HELLO_HEADER.size:
            self._need = _HELLO_HEADER.size
            return 0
        magic, length = _HELLO_HEADER.unpack_from(src, 0)
        if not 0 < length <= MAX_HELLO_ADDRESS:
            raise FramingError(f"bad hello address length {length}")
        end = _HELLO_HEADER.size + length
        node_id: str | None = None
        if magic == MAGIC_V2:
            if n < end + 2:
                self._need = end + 2
                return 0
            (id_len,) = _U16.unpack_from(src, end)
            if not 0 < id_len <= MAX_NODE_ID:
                raise FramingError(f"bad hello node id length {id_len}")
            id_end = end + 2 + id_len
            if n < id_end:
                self._need = id_end
                return 0
            try:
                node_id = bytes(src[end + 2 : id_end]).decode("utf-8")
            except UnicodeDecodeError:
                raise FramingError("bad hello node id") from None
            address_end, end = end, id_end
        else:
            if n < end:
                self._need = end
                return 0
            address_end = end
        try:
            address = bytes(src[_HELLO_HEADER.size : address_end]).decode("utf-8")
            split_address(address)
        except (UnicodeDecodeError, ValueError):
            raise FramingError("bad hello address") from None
        self.peer = address
        self.node_id = node_id
        return end
