"""Raft wire messages (tags 32-95) and the log entry.

Every message carries ``term`` and ``sender`` (the sender's server id; replies go to
the transport source address). All travel on the stream channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import msgpack

from clusterfunk import wire

#: Entry kinds. The digest of an entry in ``raft.apply`` is over ``bytes([kind]) + data``.
ENTRY_COMMAND = 1  # an application command for the state machine
ENTRY_NOOP = 2  # appended by a new leader (commits earlier terms' entries, Figure 8)
ENTRY_CONFIG = 3  # data = Configuration.encode(); takes effect when appended

ENTRY_KINDS = (ENTRY_COMMAND, ENTRY_NOOP, ENTRY_CONFIG)

#: ``conflict_term`` value meaning "no entry at the rejected index".
NO_TERM = -1

#: Terms and indexes above this are refused by the core (dropped, counted): a node
#: must always be able to store ``term + 1`` (SQLite INTEGER and msgpack hold
#: signed 64 bits), and no honest cluster gets near it.
MAX_TERM = 2**62


@wire.struct
@attrs.frozen
class Entry:
    """One log entry; its index is implicit (position in the log / message)."""

    term: int
    kind: int
    data: bytes


@wire.message(32)
@attrs.frozen
class RequestVote:
    """RequestVote RPC. ``pre_vote``: a Pre-Vote probe (term is the candidate's term
    + 1, nobody changes term or vote). ``transfer``: the election follows a TimeoutNow,
    so servers must not ignore it because of leader stickiness."""

    term: int
    sender: str
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@wire.message(33)
@attrs.frozen
class RequestVoteResponse:
    term: int
    sender: str
    granted: bool
    pre_vote: bool = False


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def pack_entries(entries: Sequence[Entry]) -> bytes:
    """Entries as one msgpack array ``[term, kind, data, term, kind, data, ...]``: a
    flat batch decodes several times faster than nested per-entry structs."""
    flat: list[Any] = []
    for e in entries:
        flat += (e.term, e.kind, e.data)
    return _packb(flat)


def unpack_entries(batch: bytes) -> tuple[Entry, ...]:
    """Inverse of :func:`pack_entries`; raises ValueError on anything malformed."""
    n = len(batch)
    try:
        flat = msgpack.unpackb(batch, raw=False, max_str_len=n, max_bin_len=n,
                               max_array_len=n, max_map_len=n, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types on malformed input
        raise ValueError(f"malformed entries batch: {type(exc).__name__}") from None
    if type(flat) is not list or len(flat) % 3:
        raise ValueError("malformed entries batch")
    it = iter(flat)
    out = []
    for term, kind, data in zip(it, it, it, strict=True):
        if type(term) is not int or type(kind) is not int or type(data) is not bytes:
            raise ValueError("malformed entry in batch")
        if not 0 <= term <= MAX_TERM or kind not in ENTRY_KINDS:
            raise ValueError("entry term or kind out of range")
        out.append(Entry(term, kind, data))
    return tuple(out)


@wire.message(34)
@attrs.frozen
class AppendEntries:
    """AppendEntries RPC: the entries (see :attr:`entries`) start at
    ``prev_index + 1``; ``batch`` is their packed form (:func:`pack_entries`). Build
    with :meth:`make`."""

    term: int
    sender: str
    prev_index: int
    prev_term: int
    batch: bytes
    commit: int

    @classmethod
    def make(cls, term: int, sender: str, prev_index: int, prev_term: int,
             entries: Sequence[Entry], commit: int) -> AppendEntries:
        return cls(term, sender, prev_index, prev_term, pack_entries(entries), commit)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The entries, decoded on each access; raises ValueError if malformed."""
        return unpack_entries(self.batch)


@wire.message(35)
@attrs.frozen
class AppendEntriesResponse:
    """``success``: ``match_index`` is the last index known to match the leader.
    On failure ``reject_index`` is the rejected ``prev_index`` and the hints
    ``conflict_index`` / ``conflict_term`` let the leader skip a whole term at once."""

    term: int
    sender: str
    success: bool
    match_index: int
    reject_index: int = 0
    conflict_index: int = 0
    conflict_term: int = attrs.field(default=NO_TERM, metadata=wire.int_range(NO_TERM))


@wire.message(36)
@attrs.frozen
class Heartbeat:
    """Leader heartbeat. ``commit`` is capped at the follower's match index (so a
    follower never commits an entry it holds but the leader does not know matches);
    ``ctx`` numbers the heartbeat round (ReadIndex and the lease use the echo)."""

    term: int
    sender: str
    commit: int
    ctx: int


@wire.message(37)
@attrs.frozen
class HeartbeatResponse:
    term: int
    sender: str
    ctx: int


@wire.message(38)
@attrs.frozen
class InstallSnapshot:
    """One chunk of a snapshot: bytes ``[offset, offset + len(data))``; ``done`` marks
    the last chunk. ``config`` is the encoded configuration as of ``last_index``."""

    term: int
    sender: str
    last_index: int
    last_term: int
    config: bytes
    offset: int
    data: bytes
    done: bool


@wire.message(39)
@attrs.frozen
class InstallSnapshotResponse:
    """``next_offset``: the offset the follower expects next (the whole length once
    installed). ``success`` false: the chunk was out of order or the snapshot bad."""

    term: int
    sender: str
    last_index: int
    next_offset: int
    success: bool
    done: bool


@wire.message(40)
@attrs.frozen
class TimeoutNow:
    """Leadership transfer: the receiver starts an election at once (no Pre-Vote)."""

    term: int
    sender: str


#: Every Raft wire message (each has ``term`` and ``sender``): the core's dispatch and
#: the Raft port's authorizer (runtime/auth.py) both use this one list.
RAFT_MESSAGES: tuple[type, ...] = (
    RequestVote, RequestVoteResponse, AppendEntries, AppendEntriesResponse, Heartbeat,
    HeartbeatResponse, InstallSnapshot, InstallSnapshotResponse, TimeoutNow,
)
