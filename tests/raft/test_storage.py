"""Storage: in-memory, SQLite (recovery, corruption -> StorageCorrupt) and the
simulator store (crash keeps synced writes plus a prefix of un-synced ones)."""

from __future__ import annotations

import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft import kv
from clusterfunk.raft.config import Configuration, RaftConfig
from clusterfunk.raft.core import RaftCore
from clusterfunk.raft.errors import StorageCorrupt
from clusterfunk.raft.messages import ENTRY_COMMAND, Entry
from clusterfunk.raft.persist import apply_records
from clusterfunk.raft.sqlite_store import SQLiteStorage
from clusterfunk.raft.storage import HardState, MemoryStorage, SnapshotMeta
from clusterfunk.sim.disk import SimDisk
from clusterfunk.sim.raft_storage import SimStorage

CFG = Configuration.make({"n1": "n1:8300"})


def fill(store) -> None:
    store.save_hard_state(HardState(3, "n2", 2))
    store.append(1, [Entry(1, ENTRY_COMMAND, b"a"), Entry(2, ENTRY_COMMAND, b"b"),
                     Entry(3, ENTRY_COMMAND, b"c")])
    store.append(3, [Entry(3, ENTRY_COMMAND, b"C"), Entry(3, ENTRY_COMMAND, b"d")])
    store.sync()


@pytest.fixture(params=["memory", "sqlite", "sim"])
def store_factory(request, tmp_path):
    if request.param == "memory":
        s = MemoryStorage()
        return lambda: s
    if request.param == "sqlite":
        path = str(tmp_path / "raft.db")
        last: list[SQLiteStorage] = []

        def reopen() -> SQLiteStorage:  # as after a crash of the previous opener
            if last:
                last.pop().abandon()
            last.append(SQLiteStorage(path))
            return last[0]

        return reopen
    disk = SimDisk()
    return lambda: SimStorage(disk)


def test_round_trip_truncate_compact_snapshot(store_factory):
    s = store_factory()
    fill(s)
    rec = store_factory().recover()
    assert rec.hard_state == HardState(3, "n2", 2)
    assert [e.data for e in rec.entries] == [b"a", b"b", b"C", b"d"]
    s = store_factory()
    s.recover()
    s.save_snapshot(SnapshotMeta(3, 3, CFG, 0), b"snap")
    s.compact(2, 2)
    s.sync()
    rec = store_factory().recover()
    assert (rec.base_index, rec.base_term) == (2, 2)
    assert [e.data for e in rec.entries] == [b"C", b"d"]
    assert rec.snapshot == (SnapshotMeta(3, 3, CFG, 0), b"snap")
    s = store_factory()
    s.recover()
    s.reset(10, 4)
    s.save_snapshot(SnapshotMeta(10, 4, CFG, 0), b"s2")
    s.save_hard_state(HardState(4, None, 10))
    s.sync()
    rec = store_factory().recover()
    assert rec.entries == [] and rec.base_index == 10 and rec.hard_state.commit == 10


def persist(core: RaftCore, storage, now: float) -> None:
    """Drive a lone core as its driver would with a synchronous persister: write and
    sync each Output's records, then report the batch durable."""
    out = core.drain()
    while out is not None:
        apply_records(storage, out.persist)
        if out.persist_token:
            storage.sync()
            core.on_persisted(now, out.persist_token)
        out = core.drain()


def test_sqlite_crash_recovery_of_a_raft_node(tmp_path):
    """A single-server cluster on SQLite: writes acknowledged (applied) before a
    'crash' (the connection dropped without closing) are all there after restart."""
    path = str(tmp_path / "n1.db")
    cfg = RaftConfig(snapshot_threshold=0)
    first = SQLiteStorage(path)
    core = RaftCore("n1", first, kv.KVStore(), random.Random(1), cfg, {"n1": "n1:8300"})
    core.start(0.0)
    core.on_tick(core.next_deadline())
    persist(core, first, 0.0)
    assert core.role == "leader"
    for i in range(20):
        core.propose(1.0, kv.encode_put(f"k{i}", str(i)))
        assert core.commit_index < core.last_index  # not before its own sync
        persist(core, first, 1.0)  # commits (single voter) after the sync
    assert core.commit_index == 22
    first.abandon()  # a crash, no clean close: an open transaction (a commit index) is lost
    del core, first
    store = SQLiteStorage(path)
    sm = kv.KVStore()
    again = RaftCore("n1", store, sm, random.Random(2), cfg, {"n1": "n1:8300"})
    again.start(5.0)
    persist(again, store, 5.0)
    # every acknowledged entry is there; the commit index alone was never synced
    # (it is re-learned): the restarted leader commits them again in its new term
    assert again.last_index == 22 and again.term == 1 and again.commit_index >= 21
    again.on_tick(again.next_deadline())
    persist(again, store, 9.0)
    assert again.role == "leader" and again.commit_index == 23
    assert sm.data == {f"k{i}": str(i) for i in range(20)}
    # un-synced writes are not visible after a crash
    store.append(24, [Entry(2, ENTRY_COMMAND, b"lost")])
    store.abandon()  # crash before sync: the open transaction rolls back
    assert len(SQLiteStorage(path).recover().entries) == 23


def _corrupt(path: str, sql: str, *args) -> None:
    """Alter the file behind the store's back. A changed state row gets a matching
    checksum (a consistent but wrong record: the semantic checks must catch it)."""
    from clusterfunk.raft.sqlite_store import _state_crc

    db = sqlite3.connect(path)
    db.execute(sql, args)
    if sql.startswith("UPDATE state"):
        row = db.execute('SELECT term, vote, "commit", base_index, base_term FROM state')\
            .fetchone()
        if all(type(x) is int for x in (row[0], row[2], row[3], row[4])):
            db.execute("UPDATE state SET crc = ?", (_state_crc(*row),))
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "args", "words"),
    [
        ("UPDATE log SET data = ? WHERE idx = 2", (b"flipped",), "checksum"),
        ("DELETE FROM log WHERE idx = 2", (), "gap"),
        ('UPDATE state SET "commit" = 99', (), "commit index"),
        ("UPDATE state SET term = 0", (), "beyond the current term"),
        ("UPDATE log SET kind = 77 WHERE idx = 1", (), "checksum"),
        ("UPDATE log SET term = 'x' WHERE idx = 1", (), "mistyped"),
        ("UPDATE state SET term = 'x'", (), "non-integer"),
    ],
)
def test_sqlite_corruption_stops_the_node_with_a_clear_error(tmp_path, sql, args, words):
    path = str(tmp_path / "raft.db")
    s = SQLiteStorage(path)
    fill(s)
    s.abandon()
    _corrupt(path, sql, *args)
    with pytest.raises(StorageCorrupt, match=words):
        RaftCore("n1", SQLiteStorage(path), kv.KVStore(), random.Random(0))


def test_sqlite_term_regression_is_corruption(tmp_path):
    path = str(tmp_path / "raft.db")
    s = SQLiteStorage(path)
    s.save_hard_state(HardState(5, None, 0))
    s.append(1, [Entry(3, ENTRY_COMMAND, b"a")])
    s.sync()
    db = s.db
    db.execute("BEGIN")
    from clusterfunk.raft.storage import entry_checksum

    e = Entry(2, ENTRY_COMMAND, b"b")
    db.execute("INSERT INTO log VALUES (2, 2, ?, ?, ?)",
               (ENTRY_COMMAND, b"b", entry_checksum(2, e)))
    db.execute("COMMIT")
    s.abandon()
    with pytest.raises(StorageCorrupt, match="term regression"):
        SQLiteStorage(path).recover()


def test_sqlite_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "raft.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageCorrupt, match=r"not a database|cannot open|unreadable"):
        SQLiteStorage(str(path)).recover()


def test_sqlite_pragmas(tmp_path):
    s = SQLiteStorage(str(tmp_path / "x.db"))
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9))
def test_sim_store_crash_keeps_a_consistent_prefix(seed):
    """Random appends/truncations/compactions (term saved first, as the core does),
    some synced; a crash then loses a random suffix of the un-synced writes. Recovery
    never fails, returns a log without term regressions whose every entry is the
    entry at that index in the synced state or in a later state, and returns exactly
    the synced state if nothing was written after the last sync."""
    rng = random.Random(seed)
    disk = SimDisk()
    s = SimStorage(disk)
    s.recover()
    s.save_hard_state(HardState(1, None, 0))
    s.sync()
    model: list[Entry] = []  # the volatile truth
    base = 0
    states = [(0, [])]  # states since the last sync (the first one is synced)
    term = 1
    for _ in range(rng.randrange(1, 30)):
        op = rng.random()
        last = base + len(model)
        if op < 0.6:
            first = rng.randrange(max(base + 1, last - 2), last + 2)
            if rng.random() < 0.3:
                term += 1
                s.save_hard_state(HardState(term, None, 0))
            ents = [Entry(term, ENTRY_COMMAND, bytes([rng.randrange(256)]))
                    for _ in range(rng.randrange(1, 4))]
            s.append(first, ents)
            del model[first - base - 1:]
            model.extend(ents)
        elif op < 0.7 and last > base:
            upto = rng.randrange(base + 1, last + 1)
            t = model[upto - base - 1].term
            s.save_snapshot(SnapshotMeta(upto, t, CFG, 0), b"s")
            s.compact(upto, t)
            del model[: upto - base]
            base = upto
        states.append((base, list(model)))
        if rng.random() < 0.5:
            s.sync()
            states = [(base, list(model))]
    unsynced = disk.unsynced
    disk.crash(rng)
    rec = SimStorage(disk).recover()
    terms = [x.term for x in rec.entries]
    assert terms == sorted(terms)
    for i, e in enumerate(rec.entries, rec.base_index + 1):
        assert any(b < i <= b + len(m) and m[i - b - 1] == e for b, m in states), i
    if unsynced == 0:
        assert (rec.base_index, rec.entries) == states[0]


def test_sqlite_corrupt_snapshot_is_detected(tmp_path):
    path = str(tmp_path / "raft.db")
    s = SQLiteStorage(path)
    fill(s)
    s.save_snapshot(SnapshotMeta(3, 3, CFG, 0), b"state")
    s.sync()
    s.abandon()
    _corrupt(path, "UPDATE snapshot SET data = ?", b"other")
    with pytest.raises(StorageCorrupt, match="checksum on the snapshot"):
        SQLiteStorage(path).recover()


def test_sqlite_cluster_survives_crashes_of_every_node(make_net, tmp_path):
    """Three servers on SQLite; each is crashed (connection dropped) and reopened
    from its file in turn; acknowledged writes are all there at the end."""
    paths = {s: str(tmp_path / f"{s}.db") for s in ("n1", "n2", "n3")}
    net = make_net([], bootstrap=False, config=RaftConfig(snapshot_threshold=10,
                                                          trailing_logs=3))
    boot = {s: f"{s}:8300" for s in paths}
    for s, p in paths.items():
        net.storages[s] = SQLiteStorage(p)
        net.add(s, boot)
    net.advance(3.0)
    acked = {}
    for round_ in range(3):
        for victim in ("n1", "n2", "n3"):
            (leader,) = net.leaders()
            for i in range(5):
                key = f"k{round_}{victim}{i}"
                idx, term = net.propose(leader, kv.encode_put(key, "v"))
                net.deliver_all()
                assert (idx, term, None) in net.applied(leader)
                acked[key] = "v"
            net.crash(victim)
            net.storages[victim].abandon()
            net.advance(2.0)
            net.storages[victim] = SQLiteStorage(paths[victim])
            net.restart(victim)
            net.advance(2.0)
    (leader,) = net.leaders()
    net.advance(1.0)
    for s in paths:
        assert all(net.sms[s].get(k) == v for k, v in acked.items()), s


def test_sim_store_damaged_records_are_a_clear_error():
    disk = SimDisk()
    s = SimStorage(disk)
    fill(s)
    disk.write(("raft", "e", 2), ("garbage",))
    with pytest.raises(StorageCorrupt, match="unreadable"):
        SimStorage(disk).recover()
    disk.write(("raft", "e", 2), (1, ENTRY_COMMAND, b"x", 0))
    with pytest.raises(StorageCorrupt, match="checksum"):
        SimStorage(disk).recover()
