"""Durable state of a Raft server: the storage interface and the in-memory store.

How durability meets the driver: the core never calls these methods itself. It
emits persist records in its ``Output`` (:mod:`clusterfunk.raft.persist`); the
driver's persister writes them with :func:`~clusterfunk.raft.persist.apply_records`,
calls :meth:`Storage.sync` for a batch with a token and reports it durable, and the
messages that depend on the batch leave only then. So term, vote and entries are
durable before any message that depends on them leaves.

What is stored:

* hard state ``(term, vote, commit)``;
* log entries ``base_index + 1 .. last``; ``(base_index, base_term)`` is the
  compaction point (entries up to it are gone, covered by the snapshot);
* the latest snapshot: :class:`SnapshotMeta` plus the state machine's bytes.

``recover()`` validates what it loads and raises
:class:`~clusterfunk.raft.errors.StorageCorrupt` on gaps, term regressions, bad
checksums or a commit index beyond the log: never a silent truncation.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import attrs

from clusterfunk.raft.config import Configuration
from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.raft.messages import ENTRY_KINDS, Entry


class HardState(NamedTuple):
    """Term, vote and commit index. Immutable; a NamedTuple because the core makes
    one in every step that moves its commit index (an attrs frozen class costs three
    times as much to build)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@attrs.frozen
class SnapshotMeta:
    """A snapshot covers entries ``1 .. index``; ``config`` is the configuration as of
    ``index`` (it came from the entry at ``config_index``)."""

    index: int
    term: int
    config: Configuration
    config_index: int = 0


@attrs.frozen
class Recovered:
    hard_state: HardState
    base_index: int
    base_term: int
    entries: list[Entry]
    snapshot: tuple[SnapshotMeta, bytes] | None


class Storage(Protocol):
    """Synchronous durable storage; writes become durable at :meth:`sync` at the latest."""

    def recover(self) -> Recovered:
        """Load and validate everything (raises StorageCorrupt)."""
        ...

    def save_hard_state(self, hs: HardState) -> None: ...

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        """Store ``entries`` at ``first_index ..``; existing entries at or after
        ``first_index`` are deleted first (suffix truncation)."""

    def compact(self, upto: int, term: int) -> None:
        """Drop entries ``<= upto``; the compaction point becomes ``(upto, term)``."""

    def reset(self, base_index: int, base_term: int) -> None:
        """Drop every entry; the log restarts after ``(base_index, base_term)``."""

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None: ...

    def sync(self) -> None:
        """Make all writes so far durable (fsync / COMMIT)."""


def entry_checksum(index: int, e: Entry) -> int:
    """CRC-32 over index, term, kind and data (detects torn or altered records)."""
    head = f"{index}:{e.term}:{e.kind}:".encode()
    return zlib.crc32(e.data, zlib.crc32(head))


def validate(rec: Recovered) -> Recovered:
    """Consistency checks shared by the stores; raises StorageCorrupt."""
    hs = rec.hard_state
    if hs.term < 0 or hs.commit < 0 or rec.base_index < 0:
        raise StorageCorrupt(f"negative term/commit/base in {hs}, base {rec.base_index}")
    prev = rec.base_term
    for i, e in enumerate(rec.entries):
        idx = rec.base_index + 1 + i
        if e.kind not in ENTRY_KINDS:
            raise StorageCorrupt(f"entry {idx} has unknown kind {e.kind}")
        if e.term < prev:
            raise StorageCorrupt(f"term regression at entry {idx}: {e.term} after {prev}")
        prev = e.term
    if prev > hs.term:
        raise StorageCorrupt(f"log holds term {prev} beyond the current term {hs.term}")
    last = rec.base_index + len(rec.entries)
    if rec.snapshot is not None:
        meta = rec.snapshot[0]
        if meta.index < rec.base_index:
            raise StorageCorrupt(
                f"snapshot at {meta.index} is older than the compaction point {rec.base_index}"
            )
        last = max(last, meta.index)
    elif rec.base_index > 0:
        raise StorageCorrupt(f"log compacted up to {rec.base_index} but no snapshot")
    if hs.commit > last:
        raise StorageCorrupt(f"commit index {hs.commit} beyond the last log index {last}")
    return rec


class MemoryStorage:
    """Volatile storage (tests, benchmarks, the in-memory store). ``recover()`` on the
    same instance returns what was written, as a restart of the core would see it."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.base_index = 0
        self.base_term = 0
        self.entries: list[Entry] = []
        self.snapshot: tuple[SnapshotMeta, bytes] | None = None
        self.syncs = 0

    def recover(self) -> Recovered:
        return validate(
            Recovered(self.hard_state, self.base_index, self.base_term, list(self.entries),
                      self.snapshot)
        )

    def save_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        pos = first_index - self.base_index - 1
        if pos < 0 or pos > len(self.entries):
            raise ValueError(f"append at {first_index} leaves a gap or hits the compacted log")
        del self.entries[pos:]
        self.entries.extend(entries)

    def compact(self, upto: int, term: int) -> None:
        drop = upto - self.base_index
        if drop <= 0:
            return
        del self.entries[:drop]
        self.base_index, self.base_term = upto, term

    def reset(self, base_index: int, base_term: int) -> None:
        self.entries = []
        self.base_index, self.base_term = base_index, base_term

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        self.snapshot = (meta, data)

    def sync(self) -> None:
        self.syncs += 1
