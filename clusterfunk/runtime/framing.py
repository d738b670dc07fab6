"""Stream framing and the connection hello, sans-I/O (see ``docs/wire.md``).

A TCP connection carries, from the dialer to the acceptor only:

1. a hello: ``MAGIC`` (4 bytes: ``b"CFK"`` + stream version 1), a 2-byte
   big-endian length ``n`` (1 .. :data:`MAX_HELLO_ADDRESS`), then ``n`` bytes of
   UTF-8: the dialer's advertised ``host:port`` (its listening address);
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
STREAM_VERSION = 1
MAX_HELLO_ADDRESS = 1024
DEFAULT_MAX_FRAME = wire.MAX_MESSAGE_BYTES  # 64 MiB

_HEADER = struct.Struct(">I")
_HELLO_HEADER = struct.Struct(">4sH")
pack_length = _HEADER.pack


class FramingError(Exception):
    """The peer broke the stream protocol; the connection must be closed."""


def encode_hello(address: str) -> bytes:
    raw = address.encode("utf-8")
    if not 0 < len(raw) <= MAX_HELLO_ADDRESS:
        raise ValueError(f"advertised address too long or empty: {address!r}")
    return _HELLO_HEADER.pack(MAGIC, len(raw)) + raw


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

    __slots__ = ("_buf", "_need", "error", "max_frame", "peer")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.peer: str | None = None  # the advertised address, once the hello is read
        self._need = 0
        #: A framing error found after some good frames of the same chunk: those
        #: frames are returned first, the error is raised by :meth:`check`.
        self.error: FramingError | None = None

    def check(self) -> None:
        """Raise the framing error found behind the frames last returned, if any."""
        if self.error is not None:
            raise self.error

    @property
    def wanted(self) -> int:
        """How many more bytes complete the item being read (a hint for read sizes)."""
        return max(self._need - len(self._buf), 0)

    def feed(self, data: bytes) -> list[bytes]:
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
        if n >= 4 and src[:4] != MAGIC:
            raise FramingError("bad hello magic")
        if n < _HELLO_HEADER.size:
            self._need = _HELLO_HEADER.size
            return 0
        _, length = _HELLO_HEADER.unpack_from(src, 0)
        if not 0 < length <= MAX_HELLO_ADDRESS:
            raise FramingError(f"bad hello address length {length}")
        end = _HELLO_HEADER.size + length
        if n < end:
            self._need = end
            return 0
        try:
            address = bytes(src[_HELLO_HEADER.size : end]).decode("utf-8")
            split_address(address)
        except (UnicodeDecodeError, ValueError):
            raise FramingError("bad hello address") from None
        self.peer = address
        return end
