"""Waiting for Raft outcomes: proposals, reads and applied indexes, in one place.

:class:`Requests` turns a core's public events into callbacks for whoever is
waiting: the Trio API (:class:`clusterfunk.raft.api.RaftNode`, which wraps them in
trio events) and the simulated clients (``clusterfunk.sim.workloads.raft``). It is
synchronous and I/O-free, so both use the very same bookkeeping.

Rules:

1. A proposal is pending under its ``(index, term)``. ``Applied(index, term,
   result)`` resolves it with the result; an ``Applied`` at that index with another
   term means it was overwritten: it fails with :class:`LeadershipLost`.
2. With ``fail_on_step_down`` (the Trio API), a leader that stops leading fails
   every pending proposal and read with :class:`LeadershipLost` (their fate is
   unknown: they may still commit under the next leader). Without it (a simulated
   client that keeps waiting for the entry's fate) rule 1 alone decides.
3. A read is pending under its context number: ``ReadReady(ctx, index)`` resolves
   it once ``last_applied >= index`` (it may wait for the apply); ``ReadFailed``
   fails it (:class:`NotLeader` when leadership was lost).
4. Register a proposal *inside* the core step that made it (see :meth:`pending`):
   a single-voter leader applies before the step's events are dispatched.
5. Every waiter is removed exactly once: by its resolution, its failure, or
   :meth:`forget` (the caller gave up).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from clusterfunk.raft import events as ev
from clusterfunk.raft.errors import LeadershipLost, NotLeader
from clusterfunk.raft.roles import LEADER

#: ``callback(result, error)``: exactly one of them is meaningful.
Callback = Callable[[Any, BaseException | None], None]


class Requests:
    """Pending proposals, reads and applied-index waits of one Raft server."""

    def __init__(self, core: Any, *, fail_on_step_down: bool = True) -> None:
        self.core = core
        self.fail_on_step_down = fail_on_step_down
        self.proposals: dict[int, tuple[int, Callback]] = {}
        self.reads: dict[int, Callback] = {}
        self._applied: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    # -- registration (call inside the step that made the request: rule 4) ---------

    def pending(self, index: int, term: int, callback: Callback) -> None:
        """Wait for the entry proposed at ``(index, term)`` (rule 1)."""
        self.proposals[index] = (term, callback)

    def read(self, ctx: int, callback: Callback) -> None:
        """Wait for the ReadIndex request ``ctx``; ``callback(index, None)`` once the
        read index is applied here (rule 3)."""
        self.reads[ctx] = callback

    def when_applied(self, index: int, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` once ``index`` is applied here (now, if it is). Returns a
        function that cancels the wait."""
        if self.core.last_applied >= index:
            fn()
            return lambda: None
        item = (index, next(self._seq), fn)
        heapq.heappush(self._applied, item)

        def cancel() -> None:
            if item in self._applied:
                self._applied.remove(item)
                heapq.heapify(self._applied)

        return cancel

    def forget_proposal(self, index: int) -> None:
        self.proposals.pop(index, None)

    def forget_read(self, ctx: int) -> None:
        self.reads.pop(ctx, None)

    # -- the core's events -----------------------------------------------------------

    def on_event(self, e: Any) -> None:
        """Driver subscriber: dispatch one core event (rules 1-3)."""
        if isinstance(e, ev.Applied):
            self._on_applied(e.index, e.term, e.result)
        elif isinstance(e, ev.ReadReady):
            ready = self.reads.pop(e.ctx, None)
            if ready is not None:
                index, done = e.index, ready
                self.when_applied(index, lambda: done(index, None))
        elif isinstance(e, ev.ReadFailed):
            cb = self.reads.pop(e.ctx, None)
            if cb is not None:
                cb(None, self._read_error(e))
        elif isinstance(e, ev.RoleChanged) and self.fail_on_step_down and e.role != LEADER:
            self.fail_all(LeadershipLost(f"{self.core.id} lost leadership in term {e.term}"),
                          applied=False)

    def _on_applied(self, index: int, term: int, result: Any) -> None:
        p = self.proposals.pop(index, None)
        if p is not None:
            if p[0] == term:
                p[1](result, None)
            else:
                p[1](None, LeadershipLost(
                    f"entry {index} of term {p[0]} was overwritten by term {term}"))
        waits = self._applied
        while waits and waits[0][0] <= index:
            heapq.heappop(waits)[2]()

    def _read_error(self, e: ev.ReadFailed) -> BaseException:
        """A read refused because this server lost leadership: :class:`NotLeader`
        (with the leader it knows of now), so the caller retries there."""
        if e.reason is ev.ReadFailure.LEADERSHIP_LOST:
            return NotLeader(self.core.leader_id, self.core.leader_address)
        return LeadershipLost(str(e.reason))

    def fail_all(self, error: BaseException, *, applied: bool = True) -> None:
        """Fail every pending proposal and read (and, with ``applied``, drop every
        applied-index wait: the node stopped)."""
        proposals, self.proposals = self.proposals, {}
        for _term, cb in proposals.values():
            cb(None, error)
        reads, self.reads = self.reads, {}
        for cb in reads.values():
            cb(None, error)
        if applied:
            self._applied = []
