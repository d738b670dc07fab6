"""Event streams of the Trio APIs: one class for Raft, gossip and cluster events.

An :class:`EventHub` fans events out to any number of :class:`EventStream`
subscribers. Rules:

1. Nothing is dropped silently: each stream has its own queue, unbounded by
   default (a slow reader costs memory, never an event); a stream made with a
   finite ``buffer`` that overflows is closed, and its reader sees the end of the
   stream after the queued events plus ``overflowed == True``.
2. A stream is an async iterator and an async context manager; leaving the block,
   :meth:`EventStream.close` or garbage collection unsubscribes it.
3. :meth:`EventHub.close` ends every stream (the node stopped): iteration ends.
"""

from __future__ import annotations

import math
import weakref
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class _Subscription(Generic[T]):
    """The hub's side of one stream: the send channel (the hub never holds the
    stream itself, so a dropped stream can be garbage collected)."""

    __slots__ = ("overflowed", "send")

    def __init__(self, send: trio.MemorySendChannel[T]) -> None:
        self.send = send
        self.overflowed = False

    def offer(self, ev: T) -> bool:
        """Queue ``ev``; False when the stream is gone (closed, collected, or it
        overflowed just now: then it is ended, rule 1)."""
        try:
            self.send.send_nowait(ev)
        except trio.WouldBlock:
            self.overflowed = True
            self.send.close()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


class EventStream(Generic[T]):
    """One subscriber's queue of events (see the module docstring)."""

    def __init__(self, hub: EventHub[T], buffer: float) -> None:
        send, self._recv = trio.open_memory_channel[T](buffer)
        self._sub = _Subscription(send)
        self._hub = hub
        weakref.finalize(self, self._recv.close)

    @property
    def overflowed(self) -> bool:
        """True if events were lost because a bounded stream's buffer was full."""
        return self._sub.overflowed

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> T:
        """The next event; raises ``trio.EndOfChannel`` once the stream has ended."""
        return await self._recv.receive()

    def receive_nowait(self) -> T:
        """The next queued event; raises ``trio.WouldBlock`` if there is none."""
        return self._recv.receive_nowait()

    def close(self) -> None:
        self._hub._remove(self._sub)
        self._sub.send.close()
        self._recv.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventHub(Generic[T]):
    """Fans events out to subscribed streams (see the module docstring)."""

    def __init__(self) -> None:
        self._subs: list[_Subscription[T]] = []
        self.closed = False

    def subscribe(self, buffer: float = math.inf) -> EventStream[T]:
        s = EventStream(self, buffer)
        if self.closed:
            s._sub.send.close()
        else:
            self._subs.append(s._sub)
        return s

    def publish(self, ev: T) -> None:
        gone = [sub for sub in self._subs if not sub.offer(ev)]
        for sub in gone:
            self._remove(sub)

    def close(self) -> None:
        self.closed = True
        subs, self._subs = self._subs, []
        for sub in subs:
            sub.send.close()

    def _remove(self, sub: _Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def __len__(self) -> int:
        return len(self._subs)
