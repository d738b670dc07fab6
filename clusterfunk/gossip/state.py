"""Membership state: members with incarnation numbers and a status.

The table keeps O(1) lookup by name plus an index-addressable name list (for
random choice in O(1)); removal swaps with the last entry. Iteration order is
insertion / swap order, never string-hash order, so runs are deterministic.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from clusterfunk.gossip.messages import ALIVE, DEAD, LEFT, SUSPECT, MemberState


@attrs.frozen
class Member:
    """A public snapshot of one member."""

    name: str
    addr: str
    status: str
    incarnation: int
    tags: dict[str, str] = attrs.field(factory=dict, hash=False)


@attrs.define(slots=True)
class MemberRecord:
    """This node's mutable view of one member. ``since`` is the local time of the
    last status change (used by reaping and gossip-to-the-dead)."""

    name: str
    addr: str
    incarnation: int
    status: str
    tags: dict[str, str]
    since: float
    #: the last push-pull entry made for this member (see :meth:`wire_state`)
    _wire: MemberState | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def snapshot(self) -> Member:
        return Member(self.name, self.addr, self.status, self.incarnation, dict(self.tags))

    def wire_state(self) -> MemberState:
        """This member as a push-pull entry. The entry made last time is reused while
        it still says the same (a push-pull state lists every member, and during a
        mass join it is rebuilt after every change of view)."""
        w = self._wire
        if (
            w is None
            or w.incarnation != self.incarnation
            or w.status != self.status
            or w.addr != self.addr
            or w.tags is not self.tags
        ):
            w = self._wire = MemberState(
                self.name, self.addr, self.incarnation, self.status, self.tags
            )
        return w


class MemberTable:
    """Members by name. Invariant: ``names[index[x]] == x`` for every member x.

    The table also keeps the push-pull state (:meth:`wire_states`: every member's
    entry, in ``names`` order) up to date incrementally: a member's entry is taken
    when it is added (:meth:`MemberRecord.wire_state`) and remade only for members
    :meth:`touch`-ed since the last call, so that a node asked for its state after
    every change of view (a mass join) does not remake all of it.
    Whoever changes a record's name, address, incarnation or tags must :meth:`touch`
    it (the gossip core does so wherever it traces a change); :meth:`set_status`
    does."""

    def __init__(self) -> None:
        self.by_name: dict[str, MemberRecord] = {}
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.counts: dict[str, int] = {ALIVE: 0, SUSPECT: 0, DEAD: 0, LEFT: 0}
        #: push-pull entries aligned with ``names`` (current unless touched since)
        self._states: list[MemberState] = []
        #: members whose entry must be remade (touched)
        self._dirty: list[str] = []
        self._states_tuple: tuple[MemberState, ...] | None = ()

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def get(self, name: str) -> MemberRecord | None:
        return self.by_name.get(name)

    def add(self, rec: MemberRecord) -> None:
        self._insert(rec, rec.wire_state())  # its entry at once

    def add_entry(self, entry: MemberState, since: float) -> MemberRecord:
        """Add the member a push-pull entry describes (as :meth:`add` would a record of
        its fields), and return its record. The entry itself becomes the member's
        push-pull entry (no new object; a mass join learns n^2 members this way), its
        tag map the record's (tag maps are replaced, never changed in place)."""
        rec = MemberRecord(entry.name, entry.addr, entry.incarnation, entry.status,
                           entry.tags, since)
        rec._wire = entry  # (it says what the record says: wire_state() keeps it)
        self._insert(rec, entry)
        return rec

    def _insert(self, rec: MemberRecord, entry: MemberState) -> None:
        """Add a member unknown so far, with ``entry`` as its push-pull entry."""
        name = rec.name
        if name in self.by_name:
            raise ValueError(f"member {name} already known")
        self.by_name[name] = rec
        self._index[name] = len(self.names)
        self.names.append(name)
        self._states.append(entry)
        self._states_tuple = None
        self.counts[rec.status] += 1

    def touch(self, rec: MemberRecord) -> None:
        """``rec`` changed (address, incarnation, status or tags): remake its entry."""
        self._dirty.append(rec.name)
        self._states_tuple = None

    def wire_states(self) -> tuple[MemberState, ...]:
        """Every member as a push-pull entry, in ``names`` order."""
        out = self._states_tuple
        if out is None:
            states = self._states
            index = self._index
            by_name = self.by_name
            for name in dict.fromkeys(self._dirty):  # (touched more than once)
                i = index.get(name)
                if i is not None:  # (else removed since)
                    states[i] = by_name[name].wire_state()
            self._dirty.clear()
            out = self._states_tuple = tuple(states)
        return out

    def set_status(self, rec: MemberRecord, status: str, now: float) -> None:
        if rec.status != status:
            self.counts[rec.status] -= 1
            self.counts[status] += 1
            rec.status = status
            rec.since = now
            self.touch(rec)

    def remove(self, name: str) -> MemberRecord | None:
        rec = self.by_name.pop(name, None)
        if rec is None:
            return None
        self.counts[rec.status] -= 1
        i = self._index.pop(name)
        last = self.names.pop()
        last_state = self._states.pop()
        if last != name:
            self.names[i] = last
            self._states[i] = last_state
            self._index[last] = i
        self._states_tuple = None
        return rec

    @property
    def live_count(self) -> int:
        """Members not known dead or gone (alive + suspect), including ourselves."""
        return self.counts[ALIVE] + self.counts[SUSPECT]

    def random_members(self, rng: random.Random, k: int, accept: Any) -> list[MemberRecord]:
        """Up to ``k`` distinct members for which ``accept(rec)`` holds, drawn at random
        (memberlist kRandomNodes). Exact for small tables; for large ones a bounded
        number of random draws: O(k), not O(n)."""
        names = self.names
        n = len(names)
        out: list[MemberRecord] = []
        if n == 0 or k <= 0:
            return out
        if n <= 64:  # small: exact, a full shuffle of the candidates
            cands = [self.by_name[x] for x in names]
            cands = [r for r in cands if accept(r)]
            rng.shuffle(cands)
            return cands[:k]
        seen: set[str] = set()
        tries = 0
        limit = 8 * k + 32
        while len(out) < k and tries < limit:
            tries += 1
            name = names[rng.randrange(n)]
            if name in seen:
                continue
            seen.add(name)
            rec = self.by_name[name]
            if accept(rec):
                out.append(rec)
        return out

    def sorted_snapshots(self) -> list[Member]:
        return [self.by_name[n].snapshot() for n in sorted(self.names)]


def is_gone(status: str) -> bool:
    return status in (DEAD, LEFT)
