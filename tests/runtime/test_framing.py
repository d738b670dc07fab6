"""Stream framing and the hello, as a pure parser (docs/wire.md, "Streams")."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.runtime.framing import (
    MAGIC,
    FrameReader,
    FramingError,
    encode_frames,
    encode_hello,
)

ADDR = "127.0.0.1:7001"


def test_hello_then_frames_in_one_chunk() -> None:
    r = FrameReader()
    frames = r.feed(encode_hello(ADDR) + encode_frames([b"a", b"bc", b"def"]))
    assert r.peer == ADDR
    assert frames == [b"a", b"bc", b"def"]


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_yields_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    """However TCP splits the byte stream, the frames come out whole and in order."""
    stream = encode_hello("[::1]:8300") + encode_frames(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    r = FrameReader()
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out.extend(r.feed(stream[a:b]))
    assert r.peer == "[::1]:8300"
    assert out == frames
    assert r.wanted in (0, 4)


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    """A frame header claiming more than max_frame fails before any body arrives."""
    r = FrameReader(max_frame=1024)
    r.feed(encode_hello(ADDR))
    with pytest.raises(FramingError):
        r.feed(struct.pack(">I", 1025))
    r = FrameReader()
    r.feed(encode_hello(ADDR))
    with pytest.raises(FramingError):
        r.feed(b"\xff\xff\xff\xff")


def test_zero_length_frame_is_refused() -> None:
    r = FrameReader()
    with pytest.raises(FramingError):
        r.feed(encode_hello(ADDR) + struct.pack(">I", 0))


@pytest.mark.parametrize(
    "hello",
    [
        b"HTTP/1.1 200 OK\r\n",
        b"CFK\x02" + struct.pack(">H", 4) + b"a:10",  # other stream version
        MAGIC + struct.pack(">H", 0),
        MAGIC + struct.pack(">H", 5000) + b"x" * 5000,
        MAGIC + struct.pack(">H", 4) + b"\xff\xfe:1",  # not UTF-8
        MAGIC + struct.pack(">H", 6) + b"noport",  # not host:port
    ],
)
def test_bad_hello_is_refused(hello: bytes) -> None:
    with pytest.raises(FramingError):
        FrameReader().feed(hello + encode_frames([b"x"]))


def test_partial_hello_waits_for_more() -> None:
    data = encode_hello(ADDR)
    r = FrameReader()
    assert r.feed(data[:3]) == []
    assert r.feed(data[3:7]) == []
    assert r.peer is None
    assert r.feed(data[7:]) == []
    assert r.peer == ADDR


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_framing_error(data: bytes) -> None:
    r = FrameReader(max_frame=1 << 16)
    try:
        r.feed(data)
        r.feed(data)
    except FramingError:
        pass


def test_good_frames_before_a_bad_header_come_out_first() -> None:
    r = FrameReader(max_frame=100)
    chunk = encode_hello(ADDR) + encode_frames([b"one", b"two"]) + struct.pack(">I", 101)
    assert r.feed(chunk) == [b"one", b"two"]
    with pytest.raises(FramingError):
        r.check()
    with pytest.raises(FramingError):
        r.feed(b"more")
