"""Property tests on the real transport (loopback), driven by trio.run per example."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.runtime.framing import encode_hello
from clusterfunk.runtime.net import open_transport
from tests.runtime.helpers import Recorder, wait_for

LOOP = "127.0.0.1:0"


@settings(max_examples=12, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(min_size=1, max_size=64), st.integers(1, 300_000).map(bytes)),
        min_size=1,
        max_size=40,
    )
)
def test_any_frames_arrive_intact_and_in_order(frames: list[bytes]) -> None:
    async def main() -> None:
        async with open_transport(LOOP) as a, open_transport(LOOP) as b:
            rb = Recorder()
            a.bind(Recorder())
            b.bind(rb)
            for f in frames:
                a.send_frame(b.local_address, f)
            await wait_for(lambda: len(rb.frames) >= len(frames), timeout=10)
            assert [d for _, d in rb.frames] == frames

    trio.run(main)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_garbage_on_a_connection_never_hurts_the_endpoint(garbage: bytes, hello: bool) -> None:
    """Whatever a peer writes, the endpoint counts or delivers it and keeps serving."""

    async def main() -> None:
        async with open_transport(LOOP, max_frame=4096) as b, open_transport(LOOP) as a:
            rb = Recorder()
            b.bind(rb)
            a.bind(Recorder())
            host, port = b.local_address.rsplit(":", 1)
            raw = await trio.open_tcp_stream(host, int(port))
            prefix = encode_hello("127.0.0.1:1") if hello else b""
            await raw.send_all(prefix + garbage)
            await raw.aclose()
            s = b.stats
            await wait_for(lambda: b._incoming == 0, what="connection handled")
            assert s.bad_hello + s.bad_frame <= 1
            assert all(src == "127.0.0.1:1" for src, _ in rb.frames)
            a.send_frame(b.local_address, b"ok")
            await wait_for(lambda: (a.local_address, b"ok") in rb.frames)

    trio.run(main)
