"""Helpers for the runtime tests: free ports, polling with a bounded timeout, recorders."""

from __future__ import annotations

from collections.abc import Callable

import trio

from clusterfunk.runtime.net import free_port

__all__ = ["free_port", "wait_for"]


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
