"""The Raft KV client port's own limits (docs/security.md): a frame begun must be
finished within ``frame_timeout`` (slow-loris), and connections above
``max_connections`` are closed at once; a real client is served throughout."""

from __future__ import annotations

import struct

import trio

from clusterfunk.raft import kv
from clusterfunk.raft.api import RaftNode
from clusterfunk.raft.client import OK, ClientReply, FrameBuffer, request_frame
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.kv_server import BatchingStateMachine, ClientServer
from clusterfunk.raft.storage import MemoryStorage


async def _request(port: int, rid: int, command: bytes) -> ClientReply:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request_frame(rid, command))
        buf = FrameBuffer()
        while True:
            data = await stream.receive_some(65536)
            assert data, "the server closed the connection"
            for reply in buf.feed(data):
                return reply


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    with trio.move_on_after(5):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_slow_loris_frames_and_excess_connections_are_cut() -> None:
    cfg = RaftConfig(election_timeout=0.3, heartbeat_interval=0.03)
    async with RaftNode("solo", "127.0.0.1:0", storage=MemoryStorage(),
                        state_machine=BatchingStateMachine(kv.KVStore()), config=cfg) as node:
        await node.wait_leader(timeout=5)
        server = ClientServer(node, max_connections=3, frame_timeout=0.3)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, server.handle, listeners)
            assert (await _request(port, 1, kv.encode_put("k", "v"))).status == OK

            # slow-loris: the header of a 100-byte frame, then nothing
            loris = await trio.open_tcp_stream("127.0.0.1", port)
            await loris.send_all(struct.pack(">I", 100) + b"\x96")
            start = trio.current_time()
            assert await _closed_by_server(loris)
            assert 0.25 <= trio.current_time() - start < 3.0
            assert server.frame_timeouts == 1
            await loris.aclose()

            # an idle connection without a partial frame is not timed out, but counts
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
            await trio.sleep(0.5)
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            assert await _closed_by_server(extra)
            assert server.refused >= 1
            await extra.aclose()
            for s in idle:
                await s.aclose()
            await trio.sleep(0.2)
            reply = await _request(port, 2, kv.encode_get("k"))
            assert reply.status == OK and reply.result == "v"
            nursery.cancel_scope.cancel()
