"""Fail-stop SQLite storage (issue 11, item 4): a failed COMMIT stops the node and the
store refuses every later write; a corrupt record on start is a clear error naming
the file and the record; the database is locked against a second process."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys

import pytest

from clusterfunk.raft import kv
from clusterfunk.raft.config import RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.raft.messages import ENTRY_COMMAND, Entry
from clusterfunk.raft.persist import SyncPersister
from clusterfunk.raft.sqlite_store import SQLiteStorage, StorageInUse
from clusterfunk.raft.storage import HardState
from clusterfunk.runtime.api import DiskFailure
from clusterfunk.runtime.driver import Driver


class FailingCommit:
    """A connection whose COMMIT fails like a full or dying disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        return self.db.executemany(sql, *args)

    def close(self) -> None:
        self.db.close()


def _filled(path: str) -> None:
    s = SQLiteStorage(path)
    s.save_hard_state(HardState(3, "n1", 2))
    s.append(1, [Entry(1, ENTRY_COMMAND, b"a"), Entry(3, ENTRY_COMMAND, b"b")])
    s.sync()
    s.close()


def test_a_failed_commit_is_fail_stop(tmp_path):
    s = SQLiteStorage(str(tmp_path / "r.db"))
    s.db = FailingCommit(s.db)
    s.save_hard_state(HardState(1, "n1", 0))
    with pytest.raises(DiskFailure, match=r"r\.db: COMMIT"):
        s.sync()
    with pytest.raises(DiskFailure, match="refusing"):
        s.append(1, [Entry(1, ENTRY_COMMAND, b"x")])  # never continue after it
    with pytest.raises(DiskFailure):
        s.sync()


class Wire:
    local_address = "n1:1"
    max_datagram = 1400

    def __init__(self) -> None:
        self.sent: list[str] = []

    def bind(self, h) -> None:
        pass

    def send_datagram(self, d, b) -> None:
        self.sent.append(d)

    def send_frame(self, d, b) -> None:
        self.sent.append(d)


class Clock:
    t = 0.0

    def now(self) -> float:
        return self.t

    def schedule(self, d, t) -> None:
        pass


def test_the_driver_stops_and_sends_nothing_when_the_commit_fails(tmp_path):
    s = SQLiteStorage(str(tmp_path / "r.db"))
    core = RaftCore("n1", s, kv.KVStore(), random.Random(1), RaftConfig(pre_vote=False),
                    {"n1": "n1:1", "n2": "n2:1", "n3": "n3:1"})
    wire, clock = Wire(), Clock()
    d = Driver("n1", core, wire, clock, persister=SyncPersister(s))
    d.start()
    s.db = FailingCommit(s.db)
    clock.t = core.next_deadline()
    with pytest.raises(DiskFailure):
        d.on_timer()  # the election: term and vote must be durable before RequestVote
    assert not d.running
    votes = len(wire.sent)
    d.on_timer()
    assert len(wire.sent) == votes  # nothing leaves after the failure


def test_a_corrupt_entry_names_the_file_and_the_record(tmp_path):
    path = str(tmp_path / "r.db")
    _filled(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE log SET data = ? WHERE idx = 2", (b"B",))
    db.commit()
    db.close()
    with pytest.raises(StorageCorrupt, match=r"r\.db: bad checksum on entry 2"):
        SQLiteStorage(path).recover()


def test_a_corrupt_state_record_names_the_file_and_the_record(tmp_path):
    path = str(tmp_path / "r.db")
    _filled(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE state SET vote = 'n2'")  # a flipped vote: a double vote later
    db.commit()
    db.close()
    with pytest.raises(StorageCorrupt, match=r"r\.db: bad checksum on the state record"):
        SQLiteStorage(path).recover()


def test_an_old_file_is_migrated_and_a_newer_one_refused(tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL,
            vote TEXT, "commit" INTEGER NOT NULL, base_index INTEGER NOT NULL,
            base_term INTEGER NOT NULL);
        INSERT INTO state VALUES (1, 4, 'n2', 0, 0, 0);
    """)
    db.commit()
    db.close()
    s = SQLiteStorage(path)
    assert s.recover().hard_state == HardState(4, "n2", 0)
    s.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StorageCorrupt, match="newer"):
        SQLiteStorage(path)


def test_the_database_is_locked_against_a_second_opener(tmp_path):
    path = str(tmp_path / "r.db")
    s = SQLiteStorage(path)
    with pytest.raises(StorageInUse, match=r"r\.db.*in use"):
        SQLiteStorage(path)
    code = ("import sys; from clusterfunk.raft.sqlite_store import SQLiteStorage as S\n"
            "try:\n    S(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("StorageInUse") and "r.db" in out.stdout
    s.close()
    SQLiteStorage(path).close()  # free again once closed
