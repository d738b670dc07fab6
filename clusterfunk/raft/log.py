"""The in-memory view of the Raft log. It never touches storage: every change
appends a persist record (:mod:`clusterfunk.raft.persist`) to ``sink``, the core's
list of records for the current step, which the driver hands to the persister.

Indexes: entries ``base_index + 1 .. last_index`` are held in ``entries``;
``(base_index, base_term)`` is the compaction point (entries up to it live only in
the snapshot). Invariants: terms never decrease along the log; ``term_at(i)`` is
known for ``base_index <= i <= last_index`` and ``None`` outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusterfunk.raft.messages import Entry
from clusterfunk.raft.persist import CompactRecord, EntriesRecord, ResetRecord, new_record

#: Per-entry overhead counted against ``max_bytes_per_msg`` (term, kind, framing).
ENTRY_OVERHEAD = 16


class RaftLog:
    """Invariant: ``last_index == base_index + len(entries)`` (kept by every method
    below; read it, never assign it or change ``entries`` from outside)."""

    __slots__ = ("base_index", "base_term", "entries", "last_index", "sink")

    def __init__(self, sink: list[Any], base_index: int, base_term: int,
                 entries: list[Entry]) -> None:
        self.sink = sink
        self.base_index = base_index
        self.base_term = base_term
        self.entries = entries
        #: index of the last entry (``base_index`` if none): an attribute, not a
        #: property, because the core's hot path reads it several times per message
        self.last_index = base_index + len(entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def term_at(self, index: int) -> int | None:
        off = index - self.base_index
        if off == 0:
            return self.base_term
        if 0 < off <= len(self.entries):
            return self.entries[off - 1].term
        return None

    def entry(self, index: int) -> Entry:
        off = index - self.base_index
        if off < 1:
            raise IndexError(f"entry {index} is compacted (base {self.base_index})")
        return self.entries[off - 1]

    def slice(self, lo: int, hi: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries ``lo .. hi-1`` (at least one if any), within the batching limits."""
        base = self.base_index
        start = lo - base - 1
        end = hi - base - 1
        if end > start + max_entries:
            end = start + max_entries
        if start < 0:
            raise IndexError(f"entry {lo} is compacted (base {base})")
        ents = self.entries
        if end <= start:
            return ()
        total = 0
        for i in range(start, end):
            total += len(ents[i].data) + ENTRY_OVERHEAD
            if total > max_bytes and i > start:
                end = i
                break
        return tuple(ents[start:end])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (5.4.1): a candidate's log is at least as up-to-date as
        ours if its last term is higher, or equal with an index at least ours."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def append(self, entries: Sequence[Entry]) -> None:
        """Append at the end (leader path)."""
        self.sink.append(new_record(EntriesRecord, (self.last_index + 1, entries)))
        self.entries.extend(entries)
        self.last_index += len(entries)

    def truncate_and_append(self, first_index: int, entries: Sequence[Entry]) -> None:
        """Replace everything from ``first_index`` on with ``entries``."""
        off = first_index - self.base_index - 1
        if off < 0 or off > len(self.entries):
            raise IndexError(f"cannot write at {first_index} (base {self.base_index})")
        self.sink.append(new_record(EntriesRecord, (first_index, entries)))
        del self.entries[off:]
        self.entries.extend(entries)
        self.last_index = first_index - 1 + len(entries)

    def find_conflict(self, prev_index: int, entries: Sequence[Entry]) -> int:
        """Offset in ``entries`` of the first entry that is not already in the log
        (missing, or same index with a different term); ``len(entries)`` if none."""
        base = self.base_index
        mine = self.entries
        n = len(mine)
        for k, e in enumerate(entries):
            off = prev_index + k - base  # position of entry prev_index+1+k in `mine`
            if off < 0:
                continue  # compacted: committed, so it matches
            if off >= n or mine[off].term != e.term:
                return k
        return len(entries)

    def first_index_of_term_at(self, index: int) -> int:
        """First index of the run of entries that share ``term_at(index)``."""
        term = self.term_at(index)
        i = index
        while i - 1 > self.base_index and self.term_at(i - 1) == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int) -> int | None:
        """Last index holding ``term`` (terms never decrease: scan back from the end)."""
        i = self.last_index
        while i > self.base_index:
            t = self.entries[i - self.base_index - 1].term
            if t == term:
                return i
            if t < term:
                return None
            i -= 1
        return self.base_index if self.base_term == term and term >= 0 else None

    def compact(self, upto: int) -> None:
        """Forget entries ``<= upto`` (they are covered by a snapshot)."""
        if upto <= self.base_index:
            return
        if upto > self.last_index:
            raise IndexError(f"cannot compact beyond the log ({upto} > {self.last_index})")
        term = self.term_at(upto)
        assert term is not None
        self.sink.append(CompactRecord(upto, term))
        del self.entries[: upto - self.base_index]
        self.base_index, self.base_term = upto, term

    def reset(self, base_index: int, base_term: int) -> None:
        """Drop the whole log; it restarts after ``(base_index, base_term)``."""
        self.sink.append(ResetRecord(base_index, base_term))
        self.entries = []
        self.base_index, self.base_term = base_index, base_term
        self.last_index = base_index
