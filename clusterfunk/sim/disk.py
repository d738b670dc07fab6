"""A simulated disk: what survives a crash is what was synced, plus perhaps a
prefix of what was not.

Writes are appended to a volatile journal; :meth:`SimDisk.sync` makes them
durable. A crash keeps a random *prefix* of the un-synced journal (drawn from the
simulation's RNG) and discards the rest, like a power cut on a file system or a
write-ahead log that persists writes in order. Storage implementations for the
simulator (for example Raft's) build on this; they must not acknowledge anything
that depends on un-synced writes.

Disk faults (the nemesis' ``disk`` kind, traced as ``sim.disk``):

* ``fail_next_sync``: the next :meth:`SimDisk.sync` raises
  :class:`~clusterfunk.runtime.api.DiskFailure` and makes nothing durable (what
  reached the platter is unknown: a crash afterwards keeps a random prefix, as
  always). The caller must stop (fail-stop), never retry as if it had worked.
* a torn last write (:attr:`SimDisk.power_cut_on_next_write`: the simulator's
  Raft persister stops the node while it writes its next batch, before the sync;
  or :attr:`SimDisk.tear_next_crash`, then a crash): power is lost in the middle
  of the last surviving un-synced write. Like SQLite's WAL (every
  frame checksummed, a bad frame and what follows it ignored on recovery), the
  disk detects the torn record when it replays its journal and discards it: the
  store sees the previous value of that key (or none), never a half-written one.
  Counted in :attr:`SimDisk.torn_writes`.
* :meth:`SimDisk.corrupt`: a synced record is read back damaged (bit rot, a
  misdirected write): its value is replaced by :class:`Torn`, which a
  checksumming store must detect (Raft's refuses to start).
"""

from __future__ import annotations

import random
from typing import Any

from clusterfunk.runtime.api import DiskFailure

_DELETED = object()


class Torn:
    """A damaged record: what a reader gets back instead of the value written
    (never a tuple, so a store that checks its records detects it)."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Torn({self.key!r})"


class SimDisk:
    def __init__(self) -> None:
        self._durable: dict[Any, Any] = {}
        self._journal: list[tuple[Any, Any]] = []
        self._view: dict[Any, Any] = {}  # durable overlaid with the journal
        self.syncs = 0
        self.lost_writes = 0
        self.fail_next_sync = False
        self.tear_next_crash = False
        #: a disk fault: the persister cuts the power while it writes its next batch
        self.power_cut_on_next_write = False
        self.torn_writes = 0

    def write(self, key: Any, value: Any) -> None:
        """Write ``value`` under ``key`` (volatile until :meth:`sync`)."""
        self._journal.append((key, value))
        self._view[key] = value

    def delete(self, key: Any) -> None:
        self._journal.append((key, _DELETED))
        self._view.pop(key, None)

    def read(self, key: Any, default: Any = None) -> Any:
        return self._view.get(key, default)

    def __contains__(self, key: Any) -> bool:
        return key in self._view

    def keys(self) -> list[Any]:
        """All live keys, sorted by ``repr`` (stable across processes)."""
        return sorted(self._view, key=repr)

    def sync(self) -> None:
        """Make every write so far durable (fsync); raises DiskFailure (and makes
        nothing durable) if a fault is armed."""
        if self.fail_next_sync:
            self.fail_next_sync = False
            raise DiskFailure("simulated fsync error")
        self._apply(self._journal)
        self._journal = []
        self.syncs += 1

    @property
    def unsynced(self) -> int:
        return len(self._journal)

    def crash(self, rng: random.Random) -> None:
        """Power loss: a uniformly random prefix of the un-synced writes survives
        (if :attr:`tear_next_crash` is set, the last of them was torn: detected on
        replay and discarded)."""
        torn, self.tear_next_crash = self.tear_next_crash, False
        if self._journal:
            keep = rng.randrange(len(self._journal) + 1)
            self.lost_writes += len(self._journal) - keep
            kept = self._journal[:keep]
            if torn and kept and kept[-1][1] is not _DELETED:
                kept.pop()  # the torn record fails its frame check: replay stops there
                self.torn_writes += 1
                self.lost_writes += 1
            self._apply(kept)
            self._journal = []
        self._view = dict(self._durable)

    def corrupt(self, rng: random.Random, keys: list[Any]) -> Any:
        """Damage one durable record among ``keys`` (chosen with ``rng``); returns its
        key (``None`` if none of them is durable)."""
        live = [k for k in keys if k in self._durable]
        if not live:
            return None
        key = rng.choice(live)
        self._durable[key] = Torn(key)
        if key in self._view and not any(k == key for k, _v in self._journal):
            self._view[key] = self._durable[key]
        return key

    def _apply(self, ops: list[tuple[Any, Any]]) -> None:
        durable = self._durable
        for k, v in ops:
            if v is _DELETED:
                durable.pop(k, None)
            else:
                durable[k] = v
