"""SQLite storage (stdlib ``sqlite3``): WAL journal, ``synchronous=FULL``.

One transaction per core step: the first write opens it, :meth:`SQLiteStorage.sync`
(called by the core in ``drain()``, before the step's messages leave) commits it.
Every log row and the snapshot carry a CRC-32; :meth:`recover` checks the checksums,
the contiguity of the log, term monotonicity and the commit index, and raises
:class:`~clusterfunk.raft.errors.StorageCorrupt` on any problem, so a damaged
database stops the node instead of being silently repaired.

Fail-stop: a write or ``COMMIT`` that fails raises
:class:`~clusterfunk.runtime.api.DiskFailure` naming the file, and the store refuses
every later call (never continue after a failed fsync). The database is locked by
``fcntl.flock`` on ``<path>.lock`` for the life of the object: a second process (or
a second store in this one) gets :class:`StorageInUse` naming the file.

Schema (``PRAGMA user_version = 2``; version 1 files, whose state row has no
checksum, are migrated at open: the checksum is computed from the row as found)::

    state(id=1, term, vote, "commit", base_index, base_term, crc)
    log(idx PRIMARY KEY, term, kind, data, crc)
    snapshot(id=1, idx, term, config, config_index, data, crc)
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import zlib
from collections.abc import Sequence
from typing import Any

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
from clusterfunk.runtime.api import DiskFailure

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


FORMAT = 2


class StorageInUse(RuntimeError):
    """Another process (or store object) holds the data directory's lock."""


def _state_crc(term: int, vote: str | None, commit: int, base_index: int,
               base_term: int) -> int:
    return zlib.crc32(f"{term}:{vote!r}:{commit}:{base_index}:{base_term}".encode())


def _snap_crc(index: int, term: int, config: bytes, config_index: int, data: bytes) -> int:
    head = f"{index}:{term}:{config_index}:".encode()
    return zlib.crc32(data, zlib.crc32(config, zlib.crc32(head)))


class SQLiteStorage:
    """Durable Raft storage in one SQLite file (``path``; WAL files beside it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failed: BaseException | None = None
        self._lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._unlock()
            raise StorageInUse(
                f"{path}: the Raft database is in use by another process "
                f"(lock {path}.lock is held)") from None
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > FORMAT:
                raise StorageCorrupt(
                    f"{path}: Raft database format {version} is newer than this "
                    f"version understands ({FORMAT}); refusing to open it")
            self.db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise StorageCorrupt(f"{path}: cannot open the Raft database: {exc}") from None
        except BaseException:
            self._unlock()
            raise
        row = self.db.execute(
            'SELECT term, vote, "commit", base_index, base_term FROM state').fetchone()
        self._state: list[Any] = list(row)
        self._tx = False
        self.syncs = 0

    def _migrate(self) -> None:
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(state)")]
        if "crc" not in cols:  # format 1: add the state row's checksum
            self.db.execute("BEGIN")
            self.db.execute("ALTER TABLE state ADD COLUMN crc INTEGER")
            row = self.db.execute(
                'SELECT term, vote, "commit", base_index, base_term FROM state').fetchone()
            self.db.execute("UPDATE state SET crc = ?", (_state_crc(*row),))
            self.db.execute(f"PRAGMA user_version = {FORMAT}")
            self.db.execute("COMMIT")
        elif self.db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
            self.db.execute(f"PRAGMA user_version = {FORMAT}")

    def abandon(self) -> None:
        """Drop the connection without committing and release the lock: what a
        crash leaves behind (tests and tools)."""
        try:
            self.db.close()
        finally:
            self._unlock()

    def __del__(self) -> None:
        # A store dropped without close() (a simulated crash in tests) frees its lock.
        self._unlock()

    def _unlock(self) -> None:
        if getattr(self, "_lock_fd", -1) >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def _fail(self, what: str, exc: BaseException) -> DiskFailure:
        self.failed = exc
        return DiskFailure(f"{self.path}: {what} failed: {exc}; the node must stop")

    def _check(self) -> None:
        if self.failed is not None:
            raise DiskFailure(f"{self.path}: an earlier write failed ({self.failed}); "
                              "refusing further writes")

    def close(self) -> None:
        """Commit what is pending (only ever a commit-index update: everything else
        was synced by the core before it was relied on) and close."""
        try:
            if self._tx and self.failed is None:
                self.db.execute("COMMIT")
                self._tx = False
            self.db.close()
        finally:
            self._unlock()

    def _begin(self) -> sqlite3.Connection:
        self._check()
        if not self._tx:
            try:
                self.db.execute("BEGIN")
            except sqlite3.Error as exc:
                raise self._fail("BEGIN", exc) from None
            self._tx = True
        return self.db

    def _write(self, sql: str, args: Any, many: bool = False) -> None:
        db = self._begin()
        try:
            if many:
                db.executemany(sql, args)
            else:
                db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._fail("a write", exc) from None

    def _save_state(self) -> None:
        st = self._state
        self._write('UPDATE state SET term = ?, vote = ?, "commit" = ?, base_index = ?, '
                    "base_term = ?, crc = ?", (*st, _state_crc(*st)))

    # -- Storage -------------------------------------------------------------

    def recover(self) -> Recovered:
        try:
            return self._recover()
        except sqlite3.DatabaseError as exc:
            raise StorageCorrupt(f"{self.path}: unreadable Raft database: {exc}") from None

    def _recover(self) -> Recovered:
        db = self.db
        row = db.execute(
            'SELECT term, vote, "commit", base_index, base_term, crc FROM state').fetchone()
        if row is None:
            raise StorageCorrupt(f"{self.path}: the state record is missing")
        term, vote, commit, base_index, base_term, scrc = row
        if vote is not None and type(vote) is not str:
            raise StorageCorrupt(f"{self.path}: state record: bad vote {vote!r}")
        if not all(type(x) is int for x in (term, commit, base_index, base_term)):
            raise StorageCorrupt(
                f"{self.path}: state record: non-integer term, commit or base: {row!r}")
        if scrc != _state_crc(term, vote, commit, base_index, base_term):
            raise StorageCorrupt(
                f"{self.path}: bad checksum on the state record (term, vote, commit, base)")
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
        self._state[0:3] = [hs.term, hs.vote, hs.commit]
        self._save_state()

    def append(self, first_index: int, entries: Sequence[Entry]) -> None:
        self._write("DELETE FROM log WHERE idx >= ?", (first_index,))
        self._write(
            "INSERT INTO log (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)",
            [(first_index + i, e.term, e.kind, e.data, entry_checksum(first_index + i, e))
             for i, e in enumerate(entries)], many=True,
        )

    def compact(self, upto: int, term: int) -> None:
        self._write("DELETE FROM log WHERE idx <= ?", (upto,))
        self._state[3:5] = [upto, term]
        self._save_state()

    def reset(self, base_index: int, base_term: int) -> None:
        self._write("DELETE FROM log", ())
        self._state[3:5] = [base_index, base_term]
        self._save_state()

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        cfg = meta.config.encode()
        self._write(
            "INSERT OR REPLACE INTO snapshot (id, idx, term, config, config_index, data, crc) "
            "VALUES (1, ?, ?, ?, ?, ?, ?)",
            (meta.index, meta.term, cfg, meta.config_index, data,
             _snap_crc(meta.index, meta.term, cfg, meta.config_index, data)),
        )

    def sync(self) -> None:
        self._check()
        if self._tx:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail("COMMIT (fsync)", exc) from None
            self._tx = False
        self.syncs += 1
