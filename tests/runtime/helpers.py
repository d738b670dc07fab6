"""Helpers for the runtime tests: free ports, polling with a bounded timeout, recorders."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now (racy, but rarely)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``pred`` every few ms; fail the test after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.002)
    assert pred(), f"timed out after {timeout}s waiting for {what or pred}"


class Recorder:
    """A transport handler that keeps everything it receives."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[str, bytes]] = []
        self.frames: list[tuple[str, bytes]] = []

    def on_datagram(self, src: str, data: bytes) -> None:
        self.datagrams.append((src, data))

    def on_frame(self, src: str, data: bytes) -> None:
        self.frames.append((src, data))
