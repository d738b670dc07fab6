"""A simulated disk: what survives a crash is what was synced, plus perhaps a
prefix of what was not.

Writes are appended to a volatile journal; :meth:`SimDisk.sync` makes them
durable. A crash keeps a random *prefix* of the un-synced journal (drawn from the
simulation's RNG) and discards the rest, like a power cut on a file system or a
write-ahead log that persists writes in order. Storage implementations for the
simulator (for example Raft's) build on this; they must not acknowledge anything
that depends on un-synced writes.
"""

from __future__ import annotations

import random
from typing import Any

_DELETED = object()


class SimDisk:
    def __init__(self) -> None:
        self._durable: dict[Any, Any] = {}
        self._journal: list[tuple[Any, Any]] = []
        self._view: dict[Any, Any] = {}  # durable overlaid with the journal
        self.syncs = 0
        self.lost_writes = 0

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
        """Make every write so far durable (fsync)."""
        self._apply(self._journal)
        self._journal = []
        self.syncs += 1

    @property
    def unsynced(self) -> int:
        return len(self._journal)

    def crash(self, rng: random.Random) -> None:
        """Power loss: a uniformly random prefix of the un-synced writes survives."""
        if self._journal:
            keep = rng.randrange(len(self._journal) + 1)
            self.lost_writes += len(self._journal) - keep
            self._apply(self._journal[:keep])
            self._journal = []
        self._view = dict(self._durable)

    def _apply(self, ops: list[tuple[Any, Any]]) -> None:
        durable = self._durable
        for k, v in ops:
            if v is _DELETED:
                durable.pop(k, None)
            else:
                durable[k] = v
