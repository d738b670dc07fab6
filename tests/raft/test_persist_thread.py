"""The production persister (clusterfunk.runtime.persist): syncs run in a worker
thread, so the Trio loop keeps running during a slow fsync; completions come back
in order; a failed sync is fail-stop."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from clusterfunk.raft.messages import ENTRY_COMMAND, Entry
from clusterfunk.raft.persist import EntriesRecord
from clusterfunk.raft.storage import MemoryStorage
from clusterfunk.runtime.api import DiskFailure
from clusterfunk.runtime.persist import MAX_LAZY_BATCHES, open_persister


class SlowStorage(MemoryStorage):
    def __init__(self, delay: float, fail: bool = False) -> None:
        super().__init__()
        self.delay = delay
        self.fail = fail

    def sync(self) -> None:
        time.sleep(self.delay)  # a slow fsync, in the worker thread
        if self.fail:
            raise OSError(5, "Input/output error")
        super().sync()


class Handler:
    def __init__(self) -> None:
        self.durable: list[int] = []
        self.failed: list[BaseException] = []
        self.event = trio.Event()

    def on_persisted(self, token: int) -> None:
        self.durable.append(token)
        self.event.set()

    def on_persist_failed(self, exc: BaseException) -> None:
        self.failed.append(exc)


def _rec(i: int) -> list[Any]:
    return [EntriesRecord(i, [Entry(1, ENTRY_COMMAND, b"x")])]


async def test_a_slow_sync_does_not_block_the_event_loop():
    st = SlowStorage(0.2)
    h = Handler()
    ticks = 0
    async with open_persister(st) as p:
        p.bind(h)
        p.persist(_rec(1), 1)
        t0 = trio.current_time()
        while not h.durable:
            await trio.sleep(0.01)
            ticks += 1
        assert trio.current_time() - t0 >= 0.19
    assert ticks >= 10  # the loop ran all along (it would be ~1 if the sync blocked it)
    assert h.durable == [1] and len(st.entries) == 1


async def test_batches_queued_during_a_sync_are_group_committed_in_order():
    st = SlowStorage(0.05)
    h = Handler()
    async with open_persister(st) as p:
        p.bind(h)
        p.persist(_rec(1), 1)
        await trio.sleep(0.01)  # the first sync is running
        p.persist(_rec(2), 2)
        p.persist([], 0)
        p.persist(_rec(3), 3)
        with trio.fail_after(5):
            while h.durable[-1:] != [3]:
                h.event = trio.Event()
                await h.event.wait()
    assert h.durable == [1, 3] and st.syncs == 2
    assert len(st.entries) == 3


async def test_an_unsynced_batch_waits_for_the_next_synced_one():
    st = SlowStorage(0.0)
    h = Handler()
    async with open_persister(st) as p:
        p.bind(h)
        p.persist(_rec(1), 0)  # a commit index alone: need not be durable
        await trio.sleep(0.05)
        assert st.entries == [] and p.batches == 0  # no write (no thread hop) for it
        p.persist(_rec(2), 1)
        with trio.fail_after(5):
            while not h.durable:
                h.event = trio.Event()
                await h.event.wait()
        assert h.durable == [1] and st.syncs == 1 and p.batches == 2
        assert len(st.entries) == 2  # written in order, with the synced batch
        # a long run of unsynced batches is written without waiting any longer
        for i in range(MAX_LAZY_BATCHES):
            p.persist(_rec(3 + i), 0)
        with trio.fail_after(5):
            while p.batches < 2 + MAX_LAZY_BATCHES:
                await trio.sleep(0.01)
        assert st.syncs == 1
        p.persist(_rec(3 + MAX_LAZY_BATCHES), 0)
    assert len(st.entries) == 3 + MAX_LAZY_BATCHES  # the last one written at the end


async def test_a_failed_sync_stops_the_node():
    st = SlowStorage(0.0, fail=True)
    h = Handler()
    with pytest.raises(BaseException) as info:  # DiskFailure, in the nursery's group
        async with open_persister(st) as p:
            p.bind(h)
            p.persist(_rec(1), 1)
            await trio.sleep(1)
    assert info.group_contains(DiskFailure) if isinstance(info.value, BaseExceptionGroup) \
        else isinstance(info.value, DiskFailure)
    assert h.durable == [] and len(h.failed) == 1
    with pytest.raises(DiskFailure):
        p.persist(_rec(2), 2)  # never again after a failure
