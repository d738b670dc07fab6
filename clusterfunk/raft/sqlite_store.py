"""SQLite storage (stdlib ``sqlite3``): WAL journal, ``synchronous=FULL``.

One transaction per core step: the first write opens it, :meth:`SQLiteStorage.sync`
(called by the core in ``drain()``, before the step's messages leave) commits it.
Every log row and the snapshot carry a CRC-32; :meth:`recover` checks the checksums,
the contiguity of the log, term monotonicity and the commit index, and raises
:class:`~clusterfunk.raft.errors.StorageCorrupt` on any problem, so a damaged
database stops the node instead of being silently repaired.

Schema::

    state(id=1, term, vote, "commit", base_index, base_term)
    log(idx PRIMARY KEY, term, kind, data, crc)
    snapshot(id=1, idx, term, config, config_index, data, crc)
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence

from clusterfunk.raft.config import Configuration
from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.raft.messages import Entry
from clusterfunk.raft.storage import (
    HardState,
    Recovered,
    SnapshotMeta,
    entry_checksum,
    validate,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL, vote TEXT, "commit" INTEGER NOT NULL,
    base_index INTEGER NOT NULL, base_term INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL,
    config BLOB NOT NULL, config_index INTEGER NOT NULL, data BLOB NOT NULL,
    crc INTEGER NOT NULL);
INSERT OR IGNORE INTO state (id, term, vote, "commit", base_index, base_term)
    VALUES (1, 0, NULL, 0, 0, 0);
"""


def _snap_crc(index: int, term: int, config: bytes, config_index: int, data: bytes) -> int:
    head = f"{index}:{term}:{config_index}:".encode()
    return zlib.crc32(data, zlib.crc32(config, zlib.crc32(head)))


class SQLiteStorage:
    """Durable Raft storage in one SQLite file (``path``; WAL files beside it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StorageCorrupt(f"{path}: cannot open the Raft database: {exc}") from None
        self._tx = False
        self.syncs = 0

    def close(self) -> None:
        """Commit what is pending (only ever a commit-index update: everything else
        was synced by the core before it was relied on) and close."""
        if self._tx:
            self.db.execute("COMMIT")
            self._tx = False
        self.db.close()

    def _begin(self) -> sqlite3.Connection:
        if not self._tx:
            self.db.execute("BEGIN")
            self._tx = True
        return self.db

    # -- Storage -------------------------------------------------------------

    def recover(self) -> Recovered:
        try:
            return self._recover()
        except sqlite3.DatabaseError as exc:
            raise StorageCorrupt(f"{self.path}: unreadable Raft database: {exc}") from None

    def _recover(self) -> Recovered:
        db = self.db
        row = db.execute('SELECT term, vote, "commit", base_index, base_term FROM state').fetchone()
        if row is None:
            raise StorageCorrupt(f"{self.path}: the state row is missing")
        term, vote, commit, base_index, base_term = row
        if vote is not None and type(vote) is not str:
            raise StorageCorrupt(f"{self.path}: bad vote {vote!r}")
        if not all(type(x) is int for x in (term, commit, base_index, base_term)):
            raise StorageCorrupt(f"{self.path}: non-integer term, commit or base: {row!r}")
        entries: list[Entry] = []
        expect = base_index + 1
        for idx, t, kind, data, crc in db.execute(
            "SELECT idx, term, kind, data, crc FROM log WHERE idx > ? ORDER BY idx", (base_index,)
        ):
            if idx != expect:
                raise StorageCorrupt(f"{self.path}: gap in the log: entry {idx}, expected {expect}")
            if type(data) is not bytes or type(t) is not int or type(kind) is not int:
                raise StorageCorrupt(f"{self.path}: entry {idx} has mistyped columns")
            e = Entry(t, kind, data)
            if entry_checksum(idx, e) != crc:
                raise StorageCorrupt(f"{self.path}: bad checksum on entry {idx}")
            entries.append(e)
            expect += 1
        snap = None
        srow = db.execute(
            "SELECT idx, term, config, config_index, data, crc FROM snapshot").fetchone()
        if srow is not None:
            sidx, sterm, scfg, sci, sdata, scrc = srow
            if not (type(sidx) is type(sterm) is type(sci) is int
                    and type(scfg) is type(sdata) is bytes):
                raise StorageCorrupt(f"{self.path}: the snapshot row has mistyped columns")
            if _snap_crc(sidx, sterm, scfg, sci, sdata) != scrc:
                raise StorageCorrupt(f"{self.path}: bad checksum on the snapshot at {sidx}")
            try:
                c = Configuration.decode(scfg)
            except ValueError as exc:
                raise StorageCorrupt(f"{self.path}: snapshot configuration: {exc}") from None
            snap = (SnapshotMeta(sidx, sterm, c, sci), bytes(sdata))
        try:
            return validate(Recovered(HardState(term, vote, commit), base_index, base_term,
                                      entries, snap))
        except StorageCorrupt as exc:
            raise StorageCorrupt(f"{self.path}: {exc}") from None

    def save_hard_state(self, hs: HardState) -> None:
        self._begin().execute('UPDATE state SET term = ?, vote = ?, "commit" = ?',
                              (hs.term, hs.vote, hs.commit))

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        db = self._begin()
        db.execute("DELETE FROM log WHERE idx >= ?", (first_index,))
        db.executemany(
            "INSERT INTO log (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)",
            [(first_index + i, e.term, e.kind, e.data, entry_checksum(first_index + i, e))
             for i, e in enumerate(entries)],
        )

    def compact(self, upto: int, term: int) -> None:
        db = self._begin()
        db.execute("DELETE FROM log WHERE idx <= ?", (upto,))
        db.execute("UPDATE state SET base_index = ?, base_term = ?", (upto, term))

    def reset(self, base_index: int, base_term: int) -> None:
        db = self._begin()
        db.execute("DELETE FROM log")
        db.execute("UPDATE state SET base_index = ?, base_term = ?", (base_index, base_term))

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        cfg = meta.config.encode()
        self._begin().execute(
            "INSERT OR REPLACE INTO snapshot (id, idx, term, config, config_index, data, crc) "
            "VALUES (1, ?, ?, ?, ?, ?, ?)",
            (meta.index, meta.term, cfg, meta.config_index, data,
             _snap_crc(meta.index, meta.term, cfg, meta.config_index, data)),
        )

    def sync(self) -> None:
        if self._tx:
            self.db.execute("COMMIT")
            self._tx = False
        self.syncs += 1
