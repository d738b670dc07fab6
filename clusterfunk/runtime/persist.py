"""The production persister: durable writes off the event loop.

``async with open_persister(storage) as persister:`` starts one task (owned by the
``async with``, no hidden tasks) that takes the batches a driver hands over
(:meth:`ThreadPersister.persist` only queues them, it never blocks), writes them
and syncs (SQLite: ``COMMIT`` with ``synchronous=FULL``, i.e. fsync) in a worker
thread via ``trio.to_thread.run_sync``, then reports the highest token to the
driver (``on_persisted``). So gossip probes and coordination messages handled by
the same Trio thread never wait on a disk. Batches queued while a sync is running
are written and synced together by the next one (group commit); order is kept.
A batch without a token (a commit index alone, which need not be durable) does not
start a write of its own: it is written with the next batch that must be synced
(or when :data:`MAX_LAZY_BATCHES` of them are queued, or at the end), which saves
a worker-thread round trip per commit on every server.

Fail-stop: if a write or sync raises, the persister tells the driver
(``on_persist_failed``: it stops at once, held messages never leave), takes no
more batches and raises :class:`~clusterfunk.runtime.api.DiskFailure` out of the
``async with`` (the node stops; never continue after a failed fsync).

Leaving the ``async with`` writes and syncs what is still queued. Close the
storage *after* it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from clusterfunk.raft.persist import apply_records
from clusterfunk.runtime.api import DiskFailure, PersistHandler

#: Unsynced batches (token 0) queued before they are written without waiting for a
#: synced one: bounds the queue of a server that learns commits but writes nothing.
MAX_LAZY_BATCHES = 64


class ThreadPersister:
    """See the module docstring. Create it with :func:`open_persister`."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._handler: PersistHandler | None = None
        self._queue: list[tuple[list[Any], int]] = []
        self._wake = trio.Event()
        self.failure: BaseException | None = None
        self.syncs = 0
        self.batches = 0

    def bind(self, handler: PersistHandler) -> None:
        self._handler = handler

    def persist(self, records: list[Any], token: int) -> None:
        if self.failure is not None:
            raise DiskFailure(f"the storage failed earlier: {self.failure}")
        queue = self._queue
        queue.append((records, token))
        if token or len(queue) >= MAX_LAZY_BATCHES:
            self._wake.set()

    def _write(self, batches: list[tuple[list[Any], int]], sync: bool) -> None:
        storage = self.storage
        for records, _token in batches:
            apply_records(storage, records)
        if sync:
            storage.sync()

    async def _flush_once(self) -> None:
        batches, self._queue = self._queue, []
        if not batches:
            return
        token = max(t for _r, t in batches)
        try:
            await trio.to_thread.run_sync(self._write, batches, token > 0)
        except Exception as exc:
            self.failure = exc
            if self._handler is not None:
                self._handler.on_persist_failed(exc)
            raise DiskFailure(f"cannot make Raft state durable: {exc}") from exc
        self.batches += len(batches)
        if token:
            self.syncs += 1
            if self._handler is not None:
                self._handler.on_persisted(token)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The persister's task (started by :func:`open_persister`)."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._flush_once()


@asynccontextmanager
async def open_persister(storage: Any) -> AsyncIterator[ThreadPersister]:
    """Run a :class:`ThreadPersister` for ``storage`` for the duration of the block."""
    persister = ThreadPersister(storage)
    async with trio.open_nursery() as nursery:
        await nursery.start(persister.run)
        try:
            yield persister
        finally:
            nursery.cancel_scope.cancel()
    if persister.failure is None:
        with trio.CancelScope(shield=True):
            while persister._queue:
                await persister._flush_once()
