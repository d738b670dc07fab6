"""RaftLog: slicing/batching, conflict detection, compaction; Log Matching as a
property of logs built by the AppendEntries receiver rules."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterfunk.raft.log import RaftLog
from clusterfunk.raft.messages import ENTRY_COMMAND, Entry
from clusterfunk.raft.persist import apply_records
from clusterfunk.raft.storage import MemoryStorage


def mk(terms: list[int]) -> RaftLog:
    log = RaftLog([], 0, 0, [])
    log.append([Entry(t, ENTRY_COMMAND, f"{i}".encode()) for i, t in enumerate(terms, 1)])
    return log


def test_slice_respects_entry_and_byte_limits():
    log = RaftLog([], 0, 0, [])
    log.append([Entry(1, ENTRY_COMMAND, bytes(100)) for _ in range(10)])
    assert len(log.slice(1, 11, 4, 1 << 20)) == 4
    assert len(log.slice(1, 11, 100, 250)) == 2  # 116 bytes each
    assert len(log.slice(1, 11, 100, 10)) == 1  # always at least one entry
    assert log.slice(11, 11, 100, 1000) == ()


def test_conflict_helpers():
    log = mk([1, 1, 2, 2, 2, 3])
    assert log.first_index_of_term_at(5) == 3
    assert log.last_index_of_term(2) == 5
    assert log.last_index_of_term(4) is None
    assert log.find_conflict(2, [Entry(2, 1, b""), Entry(2, 1, b""), Entry(9, 1, b"")]) == 2
    assert log.find_conflict(6, [Entry(3, 1, b"")]) == 0


def test_compaction_keeps_terms_and_storage_in_step():
    log = mk([1, 1, 2, 2, 3])
    log.compact(3)
    assert log.base_index == 3 and log.base_term == 2
    assert log.term_at(3) == 2 and log.term_at(2) is None and log.term_at(5) == 3
    rec = MemoryStorage()  # the records the log emitted, written to a store
    apply_records(rec, log.sink)
    assert rec.base_index == 3 and rec.base_term == 2 and len(rec.entries) == 2
    assert [e.term for e in rec.entries] == [2, 3]


def _apply_append(log: RaftLog, prev: int, prev_term: int, entries: list[Entry]) -> bool:
    """The receiver rules 2-4, as the core applies them."""
    if log.term_at(prev) != prev_term:
        return False
    k = log.find_conflict(prev, entries)
    if k < len(entries):
        log.truncate_and_append(prev + 1 + k, entries[k:])
    return True


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9))
def test_log_matching_property(seed):
    """Log Matching: if two logs contain an entry with the same index and term, the
    logs are identical in all entries up through that index. Followers are driven by
    random AppendEntries cut from successive leaders' logs (leaders append entries of
    their own, increasing terms, after adopting a random follower's log)."""
    rng = random.Random(seed)
    logs = [mk([]) for _ in range(4)]
    term = 0
    for _ in range(12):
        term += 1
        leader = logs[rng.randrange(4)]
        for _ in range(rng.randrange(1, 4)):
            leader.append([Entry(term, ENTRY_COMMAND, f"{term}/{rng.random()}".encode())])
        for f in logs:
            if f is leader or rng.random() < 0.3:
                continue
            prev = rng.randrange(0, leader.last_index + 1)
            ents = [leader.entry(i) for i in range(prev + 1, leader.last_index + 1)]
            ents = ents[: rng.randrange(0, len(ents) + 1)]
            _apply_append(f, prev, leader.term_at(prev), ents)
    for a in logs:
        for b in logs:
            for i in range(1, min(a.last_index, b.last_index) + 1):
                if a.term_at(i) == b.term_at(i):
                    assert [a.entry(j) for j in range(1, i + 1)] == \
                        [b.entry(j) for j in range(1, i + 1)]
    for lg in logs:
        terms = [lg.term_at(i) for i in range(1, lg.last_index + 1)]
        assert terms == sorted(terms)
