"""The Raft KV server's client side: the client protocol server and command batching.

:class:`ClientServer` serves the protocol of :mod:`clusterfunk.raft.client` for one
:class:`~clusterfunk.raft.api.RaftNode`; :class:`BatchingStateMachine` lets the write
requests read from one connection at once share one log entry. The ``raft-node``
command (:mod:`clusterfunk.cli.raft_node`) runs both as an OS process.

Bad client input (a bad frame length, undecodable bytes) closes that client's
connection and is counted; it never touches the node.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import trio

from clusterfunk.raft import client as proto
from clusterfunk.raft import kv
from clusterfunk.raft.api import NodeStopped, RaftNode
from clusterfunk.raft.errors import LeadershipLost, NotLeader, RaftError
from clusterfunk.runtime.net import StreamReader

#: An entry whose command starts with these bytes carries several client commands.
#: 0xc1 is the one byte msgpack never uses, so no KV command can start with it.
BATCH_MAGIC = b"\xc1B"
#: Commands per batch entry stay well under ``RaftConfig.max_proposal_bytes``.
BATCH_BYTES = 256 * 1024


def encode_batch(commands: list[bytes]) -> bytes:
    return BATCH_MAGIC + msgpack.packb(commands, use_bin_type=True)


class BatchingStateMachine:
    """Wraps a state machine so that one log entry can carry many client commands
    (``BATCH_MAGIC`` + a msgpack array of commands): they are applied in order, at
    that entry's index, and the result is the list of their results. Other entries
    go to the wrapped machine unchanged. Deterministic like the machine it wraps;
    a malformed batch is not applied and returns one :class:`kv.KVError`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def apply(self, index: int, command: bytes) -> Any:
        if command[:2] != BATCH_MAGIC:
            return self.inner.apply(index, command)
        try:
            cmds = msgpack.unpackb(command[2:], raw=False)
        except Exception:
            return kv.KVError("malformed batch")
        if type(cmds) is not list or not all(type(c) is bytes for c in cmds):
            return kv.KVError("malformed batch")
        apply = self.inner.apply
        return [apply(index, c) for c in cmds]

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def parse_peers(text: str) -> dict[str, str]:
    """``"n1=host:port,n2=host:port"`` -> ``{"n1": "host:port", ...}``."""
    peers: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        sid, sep, addr = item.partition("=")
        if not sep or not sid or ":" not in addr:
            raise ValueError(f"--peers items are ID=HOST:PORT, not {item!r}")
        peers[sid] = addr
    return peers


class ClientServer:
    """Serves the client protocol for one node (see :mod:`clusterfunk.raft.client`).

    Per connection: one reader loop that proposes every write request of a read
    batch in a single core step (one AppendEntries batch), and one writer task that
    sends all replies ready so far in one write. No task per request, except reads.
    """

    def __init__(
        self,
        node: RaftNode,
        batch: bool = True,
        *,
        max_connections: int = 1024,
        frame_timeout: float = 30.0,
    ) -> None:
        self.node = node
        self.batch = batch
        #: open connections above this are closed at once (counted in ``refused``)
        self.max_connections = max_connections
        #: a frame begun must be complete within this many seconds (slow-loris)
        self.frame_timeout = frame_timeout
        self.bad_frames = 0
        self.connections = 0
        self.open = 0
        self.refused = 0
        self.frame_timeouts = 0
        self.broken = 0  # connections that ended in a transport or TLS error

    async def handle(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        """Serve one connection (plain TCP, or TLS from a ``trio.SSLListener``)."""
        self.connections += 1
        if self.open >= self.max_connections:
            self.refused += 1
            await trio.aclose_forcefully(stream)
            return
        self.open += 1
        conn = _Conn(self, stream)
        try:
            await conn.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # a client that vanished, reset the connection or failed the TLS handshake:
            # it costs that connection only (errors from the connection's nursery
            # arrive grouped, so ``except*``; nothing a client does may end the node)
            self.broken += 1
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)


class _SSLReader:
    """``StreamReader``'s interface over a TLS stream (no raw-socket fast path)."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream

    async def receive(self, size: int) -> bytes:
        return bytes(await self.stream.receive_some(size))


class _Conn:
    def __init__(
        self, server: ClientServer, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    ) -> None:
        self.server = server
        self.node = server.node
        self.stream = stream
        self.out: list[bytes] = []
        self.wake = trio.Event()
        self.closed = False
        self.writing = False
        # The stdlib socket under trio's (non-blocking): lets replies leave from
        # inside the core's event callback without a task switch (plain TCP only:
        # TLS records go through the stream).
        plain = isinstance(stream, trio.SocketStream)
        self.raw = getattr(stream.socket, "_sock", None) if plain else None

    def reply(self, rid: int, status: str, result: Any = None, leader: str | None = None) -> None:
        if self.closed:
            return
        if isinstance(result, kv.KVError):
            status, result = proto.ERROR, result.reason
        self.out.append(_reply_bytes(rid, status, result, leader))
        if len(self.out) == 1:
            self.node.after_step(self._flush_now)

    def _reply_results(self, rids: list[int], results: list[Any]) -> None:
        """The replies of one batch entry (one result per request, in order)."""
        if self.closed:
            return
        out = self.out
        was_empty = not out
        ok, err, kverror, rf = proto.OK, proto.ERROR, kv.KVError, _reply_bytes
        for rid, r in zip(rids, results, strict=True):
            if type(r) is kverror:
                out.append(rf(rid, err, r.reason, None))
            else:
                out.append(rf(rid, ok, r, None))
        if was_empty and out:
            self.node.after_step(self._flush_now)

    def _reply_error(self, rid: int, error: BaseException) -> None:
        if isinstance(error, NotLeader):
            self.reply(rid, proto.NOT_LEADER, None, error.leader_id)
        else:
            self.reply(rid, proto.UNKNOWN, str(error))

    def _flush_now(self) -> None:
        """Called at the end of a core step: try to send the replies at once with a
        non-blocking send (saves a task switch per reply); the writer task takes
        over whatever the socket does not accept now."""
        if not self.out:
            return
        if self.writing or self.raw is None:
            self.wake.set()
            return
        data = b"".join(self.out)
        self.out.clear()
        try:
            n = self.raw.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.closed = True
            return
        if n < len(data):
            self.out.append(data[n:])
            self.wake.set()

    def _callback(self, rid: int) -> Any:
        def done(result: Any, error: BaseException | None) -> None:
            if error is None:
                self.reply(rid, proto.OK, result)
            else:
                self._reply_error(rid, error)

        return done

    def _group_callback(self, rids: list[int]) -> Any:
        """The callback of a batch entry: hands each request its own result."""

        def done(result: Any, error: BaseException | None) -> None:
            if error is None and type(result) is list and len(result) == len(rids):
                self._reply_results(rids, result)
                return
            if error is None:
                error = RaftError(f"batch entry failed: {result!r}")
            for rid in rids:
                self._reply_error(rid, error)

        return done

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            try:
                await self._reader(nursery)
            finally:
                self.closed = True
                nursery.cancel_scope.cancel()

    async def _writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.out:
                data = b"".join(self.out)
                self.out.clear()
                self.writing = True
                try:
                    await self.stream.send_all(data)
                finally:
                    self.writing = False

    async def _reader(self, nursery: trio.Nursery) -> None:
        buf = proto.FrameBuffer()
        node = self.node
        stream = self.stream
        incoming: StreamReader | _SSLReader = (
            StreamReader(stream) if isinstance(stream, trio.SocketStream) else _SSLReader(stream)
        )
        while True:
            # 64 KiB: a recv buffer above malloc's mmap threshold (128 KiB) costs an
            # mmap + munmap per call (~8 us measured), more than the rest of the read.
            limit = self.server.frame_timeout if buf.pending else math.inf
            with trio.move_on_after(limit) as waited:
                data = await incoming.receive(1 << 16)
            if waited.cancelled_caught:  # a frame begun and never finished: slow-loris
                self.server.frame_timeouts += 1
                return
            if not data:
                return
            try:
                msgs = buf.feed(data)
            except proto.ProtocolError:
                self.server.bad_frames += 1
                return
            wids: list[int] = []
            wcmds: list[bytes] = []
            for m in msgs:
                if type(m) is not proto.ClientRequest:
                    self.server.bad_frames += 1
                    return
                if m.read:
                    nursery.start_soon(self._read, m)
                else:
                    wids.append(m.id)
                    wcmds.append(m.command)
            if not wids:
                continue
            if self.server.batch and len(wids) > 1:
                writes, groups = self._batched(wids, wcmds)
            else:
                writes = [(c, self._callback(rid)) for rid, c in zip(wids, wcmds, strict=True)]
                groups = [[rid] for rid in wids]
            try:
                errors = node.propose_many_nowait(writes)
            except NodeStopped as exc:
                for rid in wids:
                    self.reply(rid, proto.UNKNOWN, str(exc))
                return
            for group, err in zip(groups, errors, strict=True):
                if err is None:
                    continue
                for rid in group:
                    if isinstance(err, NotLeader):
                        self.reply(rid, proto.NOT_LEADER, None, err.leader_id)
                    else:
                        self.reply(rid, proto.ERROR, str(err))

    def _batched(
        self, wids: list[int], wcmds: list[bytes]
    ) -> tuple[list[tuple[bytes, Any]], list[list[int]]]:
        """Pack consecutive write requests into batch entries of at most
        ``BATCH_BYTES``. Returns the proposals and, per proposal, the request ids
        it answers (a refusal of a batch entry is answered to each of them)."""
        out: list[tuple[bytes, Any]] = []
        groups: list[list[int]] = []
        i, n = 0, len(wids)
        while i < n:
            size, j = len(wcmds[i]), i + 1
            while j < n and size + len(wcmds[j]) <= BATCH_BYTES:
                size += len(wcmds[j])
                j += 1
            rids = wids[i:j]
            if j - i == 1:
                out.append((wcmds[i], self._callback(wids[i])))
            else:
                out.append((encode_batch(wcmds[i:j]), self._group_callback(rids)))
            groups.append(rids)
            i = j
        return out, groups

    async def _read(self, m: proto.ClientRequest) -> None:
        try:
            op, key, _args = kv.decode_command(m.command)
        except ValueError as exc:
            self.reply(m.id, proto.ERROR, str(exc))
            return
        if op != "get":
            self.reply(m.id, proto.ERROR, "only get can be served as a read")
            return
        try:
            value = await self.node.read(lambda sm: sm.get(key), timeout=5.0)
        except NotLeader as exc:
            self.reply(m.id, proto.NOT_LEADER, None, exc.leader_id)
        except (LeadershipLost, RaftError) as exc:
            self.reply(m.id, proto.UNKNOWN, str(exc))
        else:
            self.reply(m.id, proto.OK, value)


def _reply_bytes(rid: int, status: str, result: Any, leader: str | None) -> bytes:
    try:
        return proto.reply_frame(rid, status, result, leader)
    except (TypeError, ValueError, OverflowError):  # a result msgpack cannot carry
        return proto.reply_frame(rid, proto.ERROR, f"unencodable result: {result!r}"[:200], None)

