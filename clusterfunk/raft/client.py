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
import struct
import time
from collections.abc import Iterable
from typing import Any

import attrs

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


class FrameBuffer:
    """Incremental frame parser (sans-I/O): ``feed(bytes) -> [message, ...]``."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

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
                out.append(wire.decode(body, self.max_frame))
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

    def __init__(self, nodes: dict[str, str], timeout: float = 5.0) -> None:
        self.nodes = dict(nodes)
        self.timeout = timeout
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
        self._sock, self._conn_to = s, node
        self._buf = FrameBuffer()
        return s

    def _recv(self, s: socket.socket) -> list[ClientReply]:
        data = s.recv(1 << 20)
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
                s.sendall(frame(ClientRequest(rid, command, read)))
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
                s.sendall(
                    b"".join(frame(ClientRequest(ids[i], cmds[i])) for i in range(nxt, nxt + k))
                )
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
