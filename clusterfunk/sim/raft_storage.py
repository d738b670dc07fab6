"""Raft storage over the simulator's :class:`~clusterfunk.sim.disk.SimDisk`, and the
simulator's :class:`~clusterfunk.runtime.api.Persister` for it (:class:`SimPersister`).

Writes go to the disk's volatile journal; :meth:`SimStorage.sync` (called by the
persister when a batch must be durable, before the messages that depend on it
leave) makes them durable. A simulated crash keeps the
synced state plus a random prefix of un-synced writes, so write order matters: a
prefix of any operation must leave a consistent store. Hence: a suffix truncation
deletes from the highest index down; a compaction records the new base before it
deletes from the lowest index up; a reset deletes every entry (highest first)
before it records the new base.

Keys: ``("raft", "hs")``, ``("raft", "base")``, ``("raft", "snap")`` and
``("raft", "e", index)``; every value carries a CRC-32 that :meth:`recover` checks.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from clusterfunk.raft.config import Configuration
from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.raft.messages import Entry
from clusterfunk.raft.persist import apply_records
from clusterfunk.raft.storage import (
    HardState,
    Recovered,
    SnapshotMeta,
    entry_checksum,
    validate,
)
from clusterfunk.runtime.api import DiskFailure, PersistHandler
from clusterfunk.sim.disk import SimDisk

_HS = ("raft", "hs")
_BASE = ("raft", "base")
_SNAP = ("raft", "snap")


def _ekey(index: int) -> tuple[str, str, int]:
    return ("raft", "e", index)


class SimStorage:
    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        self._base = 0
        self._last = 0

    def recover(self) -> Recovered:
        try:
            return self._recover()
        except (ValueError, TypeError) as exc:  # mistyped or mis-shaped records
            raise StorageCorrupt(f"unreadable Raft records: {exc}") from None

    def _read(self, key: Any, default: Any = None) -> Any:
        value = self.disk.read(key, default)
        if value is not default and type(value) is not tuple:
            raise StorageCorrupt(f"damaged record {key!r}: {value!r}")
        return value

    def _recover(self) -> Recovered:
        d = self.disk
        hs = self._read(_HS, (0, None, 0))
        base_index, base_term = self._read(_BASE, (0, 0))
        live = d.keys()
        idxs = sorted(k[2] for k in live
                      if type(k) is tuple and len(k) == 3 and k[:2] == ("raft", "e"))
        entries: list[Entry] = []
        expect = base_index + 1
        for idx in idxs:
            if idx <= base_index:
                continue  # left over from a compaction cut short by a crash
            if idx != expect:
                raise StorageCorrupt(f"gap in the log: entry {idx}, expected {expect}")
            term, kind, data, crc = self._read(_ekey(idx))
            e = Entry(term, kind, data)
            if entry_checksum(idx, e) != crc:
                raise StorageCorrupt(f"bad checksum on entry {idx}")
            entries.append(e)
            expect += 1
        snap = None
        raw = self._read(_SNAP)
        if raw is not None:
            sidx, sterm, scfg, sci, sdata, scrc = raw
            if zlib.crc32(sdata, zlib.crc32(scfg)) != scrc:
                raise StorageCorrupt(f"bad checksum on the snapshot at {sidx}")
            snap = (SnapshotMeta(sidx, sterm, Configuration.decode(scfg), sci), sdata)
        self._base = base_index
        self._last = base_index + len(entries)
        return validate(Recovered(HardState(*hs), base_index, base_term, entries, snap))

    def save_hard_state(self, hs: HardState) -> None:
        self.disk.write(_HS, (hs.term, hs.vote, hs.commit))

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        d = self.disk
        for idx in range(self._last, first_index - 1, -1):
            if idx > self._base:
                d.delete(_ekey(idx))
        for i, e in enumerate(entries):
            idx = first_index + i
            d.write(_ekey(idx), (e.term, e.kind, e.data, entry_checksum(idx, e)))
        self._last = first_index + len(entries) - 1

    def compact(self, upto: int, term: int) -> None:
        d = self.disk
        d.write(_BASE, (upto, term))
        for idx in range(self._base + 1, upto + 1):
            d.delete(_ekey(idx))
        self._base = upto

    def reset(self, base_index: int, base_term: int) -> None:
        d = self.disk
        for idx in range(self._last, self._base, -1):
            d.delete(_ekey(idx))
        d.write(_BASE, (base_index, base_term))
        self._base = self._last = base_index

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        cfg = meta.config.encode()
        self.disk.write(_SNAP, (meta.index, meta.term, cfg, meta.config_index, data,
                                zlib.crc32(data, zlib.crc32(cfg))))

    def sync(self) -> None:
        self.disk.sync()


class SimPersister:
    """The simulator's persister: writes each batch to the :class:`SimDisk` journal at
    once, in hand-over order; a batch with a token is synced, and reported durable,
    either at once (``latency=0``, the default) or ``latency`` virtual seconds later
    (a modelled fsync; completions stay in hand-over order). A crash in between
    loses the un-synced writes (the disk keeps a random prefix) and the completion
    never arrives. A failing fsync (:attr:`SimDisk.fail_next_sync`, a disk fault)
    is fail-stop: the driver stops at once and the node is crashed.

    ``schedule(delay, fn)`` runs ``fn`` later in virtual time (the simulation's
    ``after``); ``crash()`` stops the node (the simulation's ``crash`` of this host).
    Both are needed only for ``latency > 0`` and for disk faults."""

    def __init__(
        self,
        storage: SimStorage,
        *,
        latency: float = 0.0,
        now: Any = None,
        schedule: Any = None,
        crash: Any = None,
    ) -> None:
        self.storage = storage
        self.latency = latency
        self._now = now
        self._schedule = schedule
        self._crash = crash
        self._handler: PersistHandler | None = None
        self._last_done = 0.0  # virtual time of the last scheduled completion
        self.failed = False

    @classmethod
    def for_host(cls, host: Any, storage: SimStorage, latency: float = 0.0) -> SimPersister:
        """The persister of one incarnation of a simulated node (a ``SimHost``):
        completions and the fail-stop crash are simulator events that do nothing
        once this incarnation has stopped; a completion due while the node is
        paused waits until it resumes (like a SIGSTOPped process)."""
        sim = host.sim
        incarnation = host.incarnation

        def schedule(delay: float, fn: Any) -> None:
            def run() -> None:
                if not host.alive or host.incarnation != incarnation:
                    return
                if host.paused:
                    sim.after(0.001, run)
                    return
                fn()

            sim.after(delay, run)

        def crash() -> None:
            def run() -> None:
                if host.alive and host.incarnation == incarnation:
                    sim.crash(host.name)

            sim.at(sim.now, run)

        return cls(storage, latency=latency, now=lambda: sim.now, schedule=schedule,
                   crash=crash)

    def bind(self, handler: PersistHandler) -> None:
        self._handler = handler

    def persist(self, records: list[Any], token: int) -> None:
        if self.failed:
            return
        apply_records(self.storage, records)
        if not token:
            return
        disk = self.storage.disk
        if disk.power_cut_on_next_write:
            # A disk fault (torn_write): power fails while this batch is being
            # written, before its sync: the node stops now; the crash keeps a random
            # prefix of the un-synced writes, the last of them torn.
            disk.power_cut_on_next_write = False
            disk.tear_next_crash = True
            self.failed = True
            if self._handler is not None:
                self._handler.on_persist_failed(DiskFailure("simulated power cut"))
            if self._crash is not None:
                self._crash()
            return
        if self.latency <= 0 or self._schedule is None:
            self._sync(token)
            return
        now = self._now()
        due = max(now + self.latency, self._last_done)
        self._last_done = due
        self._schedule(due - now, lambda: self._sync(token))

    def _sync(self, token: int) -> None:
        if self.failed:
            return
        try:
            self.storage.sync()
        except DiskFailure as exc:
            self.failed = True
            if self._handler is not None:
                self._handler.on_persist_failed(exc)
            if self._crash is not None:
                self._crash()
            return
        if self._handler is not None:
            self._handler.on_persisted(token)
