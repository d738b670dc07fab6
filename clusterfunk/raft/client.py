"""The client protocol of ``clusterfunk raft-node``: KV commands over TCP.

A client opens a TCP connection to a node's client port and writes *frames*:
a 4-byte big-endian length, then one wire message (:mod:`clusterfunk.wire`).
The node answers on the same connection, in any order, matched by ``id``:

* :class:`ClientRequest` ``(id, command, read)``: ``command`` is a state-machine
  command (for the KV store: :mod:`clusterfunk.raft.kv`). ``read=False``: it is
  proposed to the log and the reply carries the result of applying it. ``read=True``:
  a linearizable read through ReadIndex, the command is evaluated on the local state
  machine without entering the log.
* :class:`ClientReply` ``(id, status, result, leader_id)``: ``status`` is ``ok``,
  ``not_leader`` (certainly not applied; ``leader_id`` names the leader when known),
  ``unknown`` (leadership lost or timed out: it may or may not have been applied),
  or ``error`` (refused, with a reason in ``result``: too large, malformed, ...).

Frames larger than :data:`MAX_FRAME` or undecodable close the connection (counted
by the server). Tags 90-95 of the Raft range are this protocol's.

:class:`SyncClient` is a small blocking client (tests, benchmarks), with
redirects to the leader and pipelining (:meth:`SyncClient.pipeline`).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterable
from typing import Any

import attrs
import msgpack

from clusterfunk import wire

MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct(">I")

OK = "ok"
NOT_LEADER = "not_leader"
UNKNOWN = "unknown"
ERROR = "error"


@wire.message(90)
@attrs.frozen
class ClientRequest:
    id: int
    command: bytes
    read: bool = False


@wire.message(91)
@attrs.frozen
class ClientReply:
    id: int
    status: str
    result: Any = None
    leader_id: str | None = None


class ProtocolError(Exception):
    """The peer broke the framing; close the connection."""


def frame(msg: Any) -> bytes:
    data = wire.encode(msg)
    return _LEN.pack(len(data)) + data


# -- the hot path's specialised codec -------------------------------------------
#
# Every client request and reply passes here, so they skip the generic wire codec:
# ``request_frame``/``reply_frame`` pack the same bytes as ``frame(ClientRequest(..))``
# / ``frame(ClientReply(..))`` without building the message object, and
# ``FrameBuffer`` recognises exactly-well-formed requests and replies itself and
# hands anything else to ``wire.decode`` (which validates or refuses it). Invariant:
# both paths give equal results on every input; checked once at import (the fast
# path is switched off if ``wire``'s encoding ever differs) and by the tests.

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_unpackb = msgpack.unpackb
_V = wire.WIRE_VERSION
_REQ = 90
_REP = 91


def request_frame(rid: int, command: bytes, read: bool = False) -> bytes:
    """``frame(ClientRequest(rid, command, read))``, faster."""
    body = _pack([_V, _REQ, rid, command, read])
    return _LEN.pack(len(body)) + body


def reply_frame(rid: int, status: str, result: Any = None, leader_id: str | None = None) -> bytes:
    """``frame(ClientReply(rid, status, result, leader_id))``, faster."""
    body = _pack([_V, _REP, rid, status, result, leader_id])
    return _LEN.pack(len(body)) + body


def _fast_decode(body: bytes, limit: int) -> Any:
    """A well-formed ClientRequest or ClientReply, else ``wire.decode(body)``."""
    n = len(body)
    if n <= limit:
        try:
            raw = _unpackb(body, raw=False, use_list=True, strict_map_key=False,
                           max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n,
                           max_ext_len=0)
        except Exception:
            raw = None
        if type(raw) is list and raw[:1] == [_V] and type(raw[0]) is int:
            k = len(raw)
            if (k == 5 and raw[1] == _REQ and type(raw[2]) is int and type(raw[3]) is bytes
                    and type(raw[4]) is bool):
                return ClientRequest(raw[2], raw[3], raw[4])
            if (k == 6 and raw[1] == _REP and type(raw[2]) is int and type(raw[3]) is str
                    and (raw[5] is None or type(raw[5]) is str)):
                return ClientReply(raw[2], raw[3], raw[4], raw[5])
    return wire.decode(body, limit)


def _fast_codec_agrees() -> bool:
    samples = [
        ClientRequest(7, b"\x93cmd", True),
        ClientRequest(2**40, b"", False),
        ClientReply(3, OK, [None, True, "v", b"b"], None),
        ClientReply(4, NOT_LEADER, None, "n2"),
    ]
    for m in samples:
        if isinstance(m, ClientRequest):
            fast = request_frame(m.id, m.command, m.read)
        else:
            assert isinstance(m, ClientReply)
            fast = reply_frame(m.id, m.status, m.result, m.leader_id)
        if fast != frame(m) or _fast_decode(fast[4:], MAX_FRAME) != wire.decode(fast[4:]):
            return False
    return True


if not _fast_codec_agrees():  # pragma: no cover - only if the wire format changes

    def request_frame(rid: int, command: bytes, read: bool = False) -> bytes:
        return frame(ClientRequest(rid, command, read))

    def reply_frame(rid: int, status: str, result: Any = None,
                    leader_id: str | None = None) -> bytes:
        return frame(ClientReply(rid, status, result, leader_id))

    def _fast_decode(body: bytes, limit: int) -> Any:
        return wire.decode(body, limit)


class FrameBuffer:
    """Incremental frame parser (sans-I/O): ``feed(bytes) -> [message, ...]``."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size == 0 or size > self.max_frame:
                raise ProtocolError(f"bad frame length {size}")
            if n - pos - 4 < size:
                break
            body = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            try:
                out.append(_fast_decode(body, self.max_frame))
            except wire.WireError as exc:
                raise ProtocolError(str(exc)) from None
        if pos:
            del buf[:pos]
        return out


class ClientError(Exception):
    """A request ended with ``unknown`` or ``error`` status, or could not be sent."""

    def __init__(self, status: str, detail: Any = None) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail}")


class SyncClient:
    """A blocking client for a cluster of ``raft-node`` processes.

    ``nodes`` maps server id -> client address ``host:port``. Requests go to the
    node believed to be the leader; ``not_leader`` replies redirect (certainly not
    applied, so retrying is safe); connection errors try the next node.
    """

    def __init__(
        self, nodes: dict[str, str], timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.nodes = dict(nodes)
        self.timeout = timeout
        #: TLS for nodes started with ``--tls-dir`` (``load_tls_dir(dir, "client")``'s
        #: ``client_context``: the cluster CA and the client certificate)
        self.ssl_context = ssl_context
        self.leader: str | None = None
        self._sock: socket.socket | None = None
        self._conn_to: str | None = None
        self._buf = FrameBuffer()
        self._next_id = 1
        self.redirects = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._conn_to = None

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _connect(self, node: str) -> socket.socket:
        if self._sock is not None and self._conn_to == node:
            return self._sock
        self.close()
        host, _, port = self.nodes[node].rpartition(":")
        s = socket.create_connection((host, int(port)), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            s = self.ssl_context.wrap_socket(s)
        self._sock, self._conn_to = s, node
        self._buf = FrameBuffer()
        return s

    def _recv(self, s: socket.socket) -> list[ClientReply]:
        data = s.recv(1 << 16)  # not larger: a buffer over 128 KiB costs an mmap per recv
        if not data:
            raise ConnectionError("connection closed by the node")
        return self._buf.feed(data)

    def _ids(self, n: int) -> list[int]:
        first = self._next_id
        self._next_id += n
        return list(range(first, first + n))

    def request(self, command: bytes, *, read: bool = False, deadline: float | None = None) -> Any:
        """Send one command, following redirects until ``deadline`` (monotonic).
        Returns the result; raises :class:`ClientError` on ``unknown``/``error``."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        order = list(self.nodes)
        attempt = 0
        while True:
            node = self.leader if self.leader in self.nodes else order[attempt % len(order)]
            attempt += 1
            try:
                s = self._connect(node)
                (rid,) = self._ids(1)
                s.sendall(request_frame(rid, command, read))
                reply = None
                while reply is None:
                    for r in self._recv(s):
                        if r.id == rid:
                            reply = r
            except (OSError, ProtocolError):
                self.close()
                self.leader = None
                if time.monotonic() > deadline:
                    raise ClientError(UNKNOWN, "no node answered before the deadline") from None
                time.sleep(0.05)
                continue
            if reply.status == OK:
                self.leader = node
                return reply.result
            if reply.status == NOT_LEADER:
                self.redirects += 1
                self.leader = reply.leader_id if reply.leader_id != node else None
                if time.monotonic() > deadline:
                    raise ClientError(NOT_LEADER, reply.leader_id)
                if self.leader is None:
                    time.sleep(0.05)
                continue
            raise ClientError(reply.status, reply.result)

    def pipeline(self, commands: Iterable[bytes], window: int) -> list[tuple[float, float, Any]]:
        """Send ``commands`` to the current leader keeping up to ``window`` in
        flight; return ``(sent, answered, reply)`` per command (monotonic seconds),
        in the order sent. Any non-ok reply raises :class:`ClientError`."""
        if self.leader is None:
            raise ClientError(ERROR, "no known leader: make one request() first")
        s = self._connect(self.leader)
        cmds = list(commands)
        ids = self._ids(len(cmds))
        first = ids[0] if ids else 0
        sent_at = [0.0] * len(cmds)
        out: list[Any] = [None] * len(cmds)
        nxt = 0
        done = 0
        inflight = 0
        while done < len(cmds):
            if inflight < window and nxt < len(cmds):
                k = min(window - inflight, len(cmds) - nxt)
                now = time.monotonic()
                s.sendall(b"".join([request_frame(ids[i], cmds[i]) for i in range(nxt, nxt + k)]))
                for i in range(nxt, nxt + k):
                    sent_at[i] = now
                nxt += k
                inflight += k
            for r in self._recv(s):
                i = r.id - first
                if not 0 <= i < len(cmds) or out[i] is not None:
                    continue
                if r.status != OK:
                    raise ClientError(r.status, r.result if r.status != NOT_LEADER else r.leader_id)
                out[i] = (sent_at[i], time.monotonic(), r.result)
                done += 1
                inflight -= 1
        return out
