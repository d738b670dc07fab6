"""What the Raft core asks to make durable: typed persist records, and the
synchronous persister.

The core never writes storage itself (etcd-raft style). As it changes its durable
state it appends records to its :class:`~clusterfunk.runtime.api.Output`
(``Output.persist``), in the order the changes happened:

* :class:`HardStateRecord`: term, vote and commit index;
* :class:`EntriesRecord`: entries stored at ``first_index ..``; every stored entry
  at or after ``first_index`` is replaced (suffix truncation);
* :class:`CompactRecord`: entries up to ``upto`` are covered by the snapshot;
* :class:`ResetRecord`: the whole log is dropped, it restarts after a snapshot;
* :class:`SnapshotRecord`: the latest snapshot.

``Output.persist_token`` (> 0) says the records must be *synced* and the
completion reported back as ``core.on_persisted(now, token)``; 0 means they only
need writing (a commit index alone: it rides along with the next sync).
``Output.wait_token`` says the step's messages may leave only once every batch up
to that token is durable (0: at once). Batches complete in the order they were
handed over.

:func:`apply_records` writes a batch to a :class:`~clusterfunk.raft.storage.Storage`;
:class:`SyncPersister` does it on the caller's thread and reports completion at
once (memory storage, tests, tools). The trio persister that runs SQLite's commit
in a worker thread is :func:`clusterfunk.runtime.persist.open_persister`; the
simulator's is :class:`clusterfunk.sim.raft_storage.SimPersister`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from clusterfunk.raft.messages import Entry
from clusterfunk.raft.storage import HardState, SnapshotMeta, Storage
from clusterfunk.runtime.api import PersistHandler

#: ``new_record(Cls, fields)`` builds a NamedTuple (a record, a HardState) from a tuple
#: of its fields without NamedTuple's Python-level ``__new__``: the core and the log
#: make one for every write.
new_record = tuple.__new__


class HardStateRecord(NamedTuple):
    hs: HardState


class EntriesRecord(NamedTuple):
    first_index: int
    entries: Sequence[Entry]


class CompactRecord(NamedTuple):
    upto: int
    term: int


class ResetRecord(NamedTuple):
    base_index: int
    base_term: int


class SnapshotRecord(NamedTuple):
    meta: SnapshotMeta
    data: bytes


Record = HardStateRecord | EntriesRecord | CompactRecord | ResetRecord | SnapshotRecord


def apply_records(storage: Storage, records: Sequence[Any]) -> None:
    """Write ``records`` to ``storage`` in order (not synced). (The records are
    NamedTuples: typed, and cheap to make on the hot path.)"""
    for r in records:
        kind = type(r)
        if kind is EntriesRecord:
            storage.append(r.first_index, r.entries)
        elif kind is HardStateRecord:
            storage.save_hard_state(r.hs)
        elif kind is CompactRecord:
            storage.compact(r.upto, r.term)
        elif kind is ResetRecord:
            storage.reset(r.base_index, r.base_term)
        elif kind is SnapshotRecord:
            storage.save_snapshot(r.meta, r.data)
        else:
            raise TypeError(f"not a Raft persist record: {r!r}")


class SyncPersister:
    """Writes and syncs on the caller's thread; durable before :meth:`persist`
    returns (memory storage; tools and tests). A failing write or sync raises out of
    :meth:`persist`, which stops the driver step before any message leaves."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._handler: PersistHandler | None = None

    def bind(self, handler: PersistHandler) -> None:
        self._handler = handler

    def persist(self, records: list[Any], token: int) -> None:
        apply_records(self.storage, records)
        if token:
            self.storage.sync()
            if self._handler is not None:
                self._handler.on_persisted(token)
